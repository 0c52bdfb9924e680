"""The process table: kept by the kernel's scheduler tracepoints in the run's arena,
seeded from /proc, read back in place (in the session's process, and by `ps` from
another process through the pins). Real processes throughout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    StartPipeline,
    assert_one_line,
    exes_inside_chroot,
    inside_chroot,
    needs_root,
    run_pipeline,
)
from helpers.proc_churn import churn

pytestmark = needs_root

# a three-level tree of exec'd binaries: sh -> sh -> sleep, each waiting for its child
TREE = "exec sh -c 'sleep 30 & echo $! > \"$0\"; wait' \"$0\""


@pytest.fixture
def table() -> Iterator[tuple[Any, Any]]:
    from pipeline import _core
    from pipeline.ds import Arena

    s = _core.Session(arena_pages=8192, queue_capacity=1024)
    s.attach_proctab()
    a = Arena.of_session(s)
    try:
        yield s, a
    finally:
        a.close()
        s.close()


def _procs(a: Any) -> dict[int, Any]:
    from pipeline import proctab

    return {p.pid: p for p in proctab.snapshot(a)}


def _wait_for_pid(path: Path) -> int:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return int(path.read_text())
        time.sleep(0.02)
    raise AssertionError("the tree did not start")


def test_kernel_keeps_forks_execs_and_exits(table: tuple[Any, Any], tmp_path: Path) -> None:
    s, a = table
    leaf_file = tmp_path / "leaf"
    top = subprocess.Popen(["sh", "-c", TREE, str(leaf_file)])
    try:
        leaf = _wait_for_pid(leaf_file)
        procs = _procs(a)
        t, leaf_e = procs[top.pid], procs[leaf]
        mid = leaf_e.ppid
        # top: forked by us, exec'd sh then exec'd sh again ("exec sh -c ...")
        assert (t.ppid, t.tgid, t.comm, t.execs, t.seeded) == (os.getpid(), top.pid, b"sh", 2,
                                                               False)
        # the exec replaced the process: mid is top itself, and the leaf its child
        assert mid == top.pid
        assert (leaf_e.comm, leaf_e.execs, leaf_e.tgid, leaf_e.seeded) == (b"sleep", 1, leaf,
                                                                            False)
        assert leaf_e.mnt_ns == os.stat(f"/proc/{leaf}/ns/mnt").st_ino
        assert leaf_e.pid_ns == os.stat(f"/proc/{leaf}/ns/pid").st_ino
        assert (leaf_e.uid, leaf_e.euid, leaf_e.gid) == (os.getuid(), os.geteuid(), os.getgid())
    finally:
        top.kill()
        top.wait()
    os.kill(leaf, 9)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and {top.pid, leaf} & set(_procs(a)):
        time.sleep(0.05)
    assert not {top.pid, leaf} & set(_procs(a))
    c = s.proc_counts()
    assert c["forks"] >= 2 and c["execs"] >= 3 and c["exits"] >= 2 and c["busy"] == 0


def test_seeded_process_and_its_exit(tmp_path: Path) -> None:
    from pipeline import _core, proctab
    from pipeline.ds import Arena

    before = subprocess.Popen(["sleep", "30"])  # exists before the table
    s = _core.Session(arena_pages=8192, queue_capacity=1024)
    try:
        s.attach_proctab()
        a = Arena.of_session(s)
        inserted, _present, nomem = proctab.seed(a, proctab.tasks())
        assert inserted > 0 and nomem == 0
        e = _procs(a)[before.pid]
        assert e.seeded and (e.ppid, e.comm, e.tgid) == (os.getpid(), b"sleep", before.pid)
        with open(f"/proc/{before.pid}/cgroup") as f:
            cg = next(ln for ln in f if ln.startswith("0::"))[3:].strip()
        assert e.cgroup_id == os.stat("/sys/fs/cgroup" + cg).st_ino
        # seeding again changes nothing: every live task is there already
        again = proctab.seed(a, [(before.pid, before.pid)])
        assert again == (0, 1, 0)
        exits = s.proc_counts()["exits"]
        before.kill()
        before.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and before.pid in _procs(a):
            time.sleep(0.05)
        assert before.pid not in _procs(a)
        assert s.proc_counts()["exits"] > exits
        a.close()
    finally:
        if before.poll() is None:
            before.kill()
        s.close()


def test_memory_is_reclaimed_over_many_short_lived_processes(table: tuple[Any, Any]) -> None:
    s, a = table
    pids = churn(a, lambda _: ["/bin/true"], 3000)
    c = s.proc_counts()
    assert c["nomem"] == 0 and c["busy"] == 0 and c["forks"] >= 3000 and c["exits"] >= 3000
    assert not set(pids) & set(_procs(a))
    # everything the exits retired is freed once the epochs move on
    assert a.synchronize()
    ep = a.epoch_stats()
    assert ep["pending"] == 0 and ep["freed"] == ep["retired"] >= 3000 * 2
    # the live table is all the heap still holds of the churn: far below its size
    assert a.heap_stats()["pages_in_use"] < 64


def test_ps_reads_a_running_pipelines_table(pipeline_proc: StartPipeline,
                                            pin_root: Path) -> None:
    pre = subprocess.Popen(["sleep", "60"])
    try:
        pl = pipeline_proc("--trigger", "none", "--process-table", "--pin-dir", str(pin_root))
        assert any("seeded from /proc" in ln for ln in pl.lines), pl.stderr()
        late = subprocess.Popen(["sleep", "60"])
        time.sleep(0.2)
        run = str(pin_root / str(pl.proc.pid))
        out = subprocess.run([sys.executable, "-m", "pipeline", "ps", "--pin-dir", run,
                              "--format", "json"], capture_output=True, text=True, check=True)
        procs = {p["pid"]: p for p in json.loads(out.stdout)}
        assert procs[pre.pid]["seeded"] and procs[pre.pid]["comm"] == "sleep"
        assert not procs[late.pid]["seeded"] and procs[late.pid]["comm"] == "sleep"
        assert procs[late.pid]["ppid"] == os.getpid() == procs[pre.pid]["ppid"]
        assert procs[pl.proc.pid]["tgid"] == pl.proc.pid
        text = subprocess.run([sys.executable, "-m", "pipeline", "ps", "--pin-dir", run],
                              capture_output=True, text=True, check=True).stdout
        sleep_exe = os.path.realpath(shutil.which("sleep") or "/bin/sleep")
        # the kernel's path carries a chroot's location; /proc's (seeding) does not
        assert inside_chroot(procs[late.pid]["exe"], sleep_exe) == sleep_exe
        assert procs[pre.pid]["exe"] == sleep_exe
        assert any(ln.split()[0] == str(late.pid) and ln.split()[-2] == "sleep"
                   and inside_chroot(ln.split()[-1], sleep_exe) == sleep_exe
                   for ln in text.splitlines()[1:])
        late.kill()
        late.wait()
        assert pl.stop() == 0
        final = pl.final()["process_table"]
        assert final["nomem"] == 0 and final["forks"] >= 1 and final["exits"] >= 1
    finally:
        pre.kill()
        pre.wait()


def test_ps_of_a_run_without_a_table_is_one_line(pipeline_proc: StartPipeline,
                                                 pin_root: Path) -> None:
    pl = pipeline_proc("--trigger", "none", "--pin-dir", str(pin_root))
    assert_one_line(run_pipeline("ps", "--pin-dir", str(pin_root / str(pl.proc.pid))),
                    "keeps no process table", "--process-table")


# a process that names itself, creates a file, and stays until told to go
_CREATOR = r"""
import os, sys
with open("/proc/self/comm", "w") as f:
    f.write("apanc")
os.close(os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY, 0o600))
sys.stdin.read()
"""


def _comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().rstrip("\n")


def _exe(pid: int) -> str | None:
    """pid's executable as /proc names it (the link's text), None for none."""
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


# the shell's executable: the kernel and /proc name the file, past any links to it
_SH = os.path.realpath(shutil.which("sh") or "/bin/sh")


def _anc(pid: int, comm: str, exe: str | None = None) -> dict[str, Any]:
    """An ancestor as the context lists it; its exe from /proc unless given."""
    exe = exe or _exe(pid)
    return ({"pid": pid, "comm": comm, "exe": exe, "exe_truncated": False} if exe is not None
            else {"pid": pid, "comm": comm, "exe": None})


def _chain(pid: int) -> list[int]:
    """pid's ancestors as /proc shows them, up to pid 1."""
    out = []
    while pid:
        out.append(pid)
        if pid == 1:
            break
        with open(f"/proc/{pid}/status") as f:
            pid = int(next(ln for ln in f if ln.startswith("PPid:")).split()[1])
    return out


@pytest.mark.parametrize("depth", [3, 64])
def test_events_carry_their_process_context(depth: int, tmp_path: Path) -> None:
    from pipeline import _core, proctab
    from pipeline.ds import Arena

    s = _core.Session(arena_pages=8192, queue_capacity=1024)
    try:
        s.attach_proctab()
        a = Arena.of_session(s)
        proctab.seed(a, proctab.tasks())  # this process and its ancestors
        s.set_ancestors(depth)
        s.set_filter(comm="apanc")
        s.attach("tracepoint")
        s.enable(True)
        target = tmp_path / "f"
        sh = subprocess.Popen(["sh", "-c", '"$0" -c "$1" "$2"; true', sys.executable, _CREATOR,
                               str(target)], stdin=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 20
            while not target.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.1)
            data, n = s.drain_json(100)  # while the creator and its shell still run
        finally:
            assert sh.stdin is not None
            sh.stdin.close()
            sh.wait()
        a.close()
    finally:
        s.close()
    (ev,) = [json.loads(ln) for ln in data.splitlines()]
    assert n == 1 and ev["comm"] == "apanc" and ev["ppid"] == sh.pid
    assert (ev["proc"], ev["parent_comm"]) == ("known", "sh")
    # the shell, this process, its parent...: as /proc shows them, ending at pid 1
    want = [_anc(sh.pid, "sh", _SH), *(_anc(p, _comm(p)) for p in _chain(os.getpid()))]
    want = want[:depth]
    assert exes_inside_chroot(ev["ancestors"], want) == want
    if depth == 64:  # deeper than the tree: the list ends at pid 1
        assert ev["ancestors"][-1]["pid"] == 1


def test_context_of_a_task_gone_before_the_drain_is_exited(tmp_path: Path) -> None:
    from pipeline import _core
    from pipeline.ds import Arena

    s = _core.Session(arena_pages=8192, queue_capacity=1024)
    try:
        s.attach_proctab()
        s.set_ancestors(4)
        s.set_filter(comm="apanc")
        s.attach("tracepoint")
        s.enable(True)
        a = Arena.of_session(s)
        sh = subprocess.Popen(["sh", "-c", '"$0" -c "$1" "$2"; true', sys.executable, _CREATOR,
                               str(tmp_path / "f")], stdin=subprocess.DEVNULL)
        sh.wait()  # both gone before the reader formats the event
        kept = _procs(a)
        data, _ = s.drain_json(100)
        s.drain_json(100)  # nothing more: the entries are reaped
        after = _procs(a)
        c = s.proc_counts()
        a.close()
    finally:
        s.close()
    (ev,) = [json.loads(ln) for ln in data.splitlines()]
    creator = ev["pid"]
    # kept, marked exited, until the reader had formatted the event
    assert kept[creator].exited and kept[sh.pid].exited and kept[creator].exit_ns > 0
    # never guessed: what the table knew of them, said to be exited; this process was
    # not seeded, so the list ends there
    py = os.path.realpath(sys.executable)
    assert (ev["proc"], inside_chroot(ev["exe"], py), ev["exe_truncated"]) == (
        "exited", py, False)
    assert (ev["parent_comm"], inside_chroot(ev["parent_exe"], _SH),
            ev["parent_exited"]) == ("sh", _SH, True)
    want = [{**_anc(sh.pid, "sh", _SH), "exited": True}, {"pid": os.getpid(), "missing": True}]
    assert exes_inside_chroot(ev["ancestors"], want) == want
    assert not {creator, sh.pid} & set(after)
    assert c["reaped"] >= 2 and c["exits"] >= 2


def test_ancestors_need_the_process_table() -> None:
    assert_one_line(run_pipeline("--ancestors", "2", "--trigger", "none"),
                    "ancestors needs the process table", "--process-table")


def test_a_run_gives_context_and_cgroup_side_by_side(pipeline_proc: StartPipeline,
                                                     tmp_path: Path, pin_root: Path) -> None:
    out = tmp_path / "ev.jsonl"
    pl = pipeline_proc("--trigger", "tracepoint", "--process-table", "--ancestors", "2",
                       "--filter-comm", "apanc", "--sink", "jsonl", "--output", str(out),
                       "--pin-dir", str(pin_root))
    sh = subprocess.Popen(["sh", "-c", '"$0" -c "$1" "$2"; true', sys.executable, _CREATOR,
                           str(tmp_path / "f")], stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (out.exists() and out.read_text()):
            time.sleep(0.05)
    finally:
        assert sh.stdin is not None
        sh.stdin.close()
        sh.wait()
    assert pl.stop() == 0
    (ev,) = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert (ev["proc"], ev["parent_comm"]) == ("known", "sh")
    want = [_anc(sh.pid, "sh", _SH), _anc(os.getpid(), _comm(os.getpid()))]
    assert exes_inside_chroot(ev["ancestors"], want) == want
    py = os.path.realpath(sys.executable)
    assert (inside_chroot(ev["exe"], py), inside_chroot(ev["parent_exe"], _SH)) == (py, _SH)
    assert "cgroup_id" in ev and "cgroup" in ev
