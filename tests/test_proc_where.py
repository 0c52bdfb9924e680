"""The process table follows a process where it goes after its fork: into another cgroup
(moved by cgroup.procs, or moving itself before an exec), into a new mount namespace,
and to a new parent when its own exits (a child subreaper adopts it). Read back through
`python -m pipeline ps` of a real run, and in the events' ancestry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from conftest import StartPipeline, needs_root
from helpers.cgroup_dirs import cg_base, needs_cgroup2

pytestmark = needs_root
__all__ = ["cg_base"]  # the fixture, used by name


def ps(pin_root: Path, run_pid: int) -> dict[int, dict[str, Any]]:
    out = subprocess.run([sys.executable, "-m", "pipeline", "ps", "--pin-dir",
                          str(pin_root / str(run_pid)), "--format", "json"],
                         capture_output=True, text=True, check=True)
    return {p["pid"]: p for p in json.loads(out.stdout)}


def wait_for(pred: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# a process with a second thread, both waiting
THREADED = "import threading, time; threading.Thread(target=time.sleep, args=(60,)).start(); " \
    "time.sleep(60)"


def ns_inode(pid: int | str, ns: str) -> int:
    return os.stat(f"/proc/{pid}/ns/{ns}").st_ino


@needs_cgroup2
def test_cgroup_and_mount_namespace_of_an_entry(pipeline_proc: StartPipeline, pin_root: Path,
                                                cg_base: Path) -> None:
    moved_to, self_moved = cg_base / "moved", cg_base / "self"
    moved_to.mkdir()
    self_moved.mkdir()
    pl = pipeline_proc("--trigger", "none", "--process-table", "--pin-dir", str(pin_root))
    # forked in the test's cgroup with a second thread, then moved as a whole by another
    # process (cgroup.procs): no exec, no fork
    moved = subprocess.Popen(["/usr/bin/python3", "-c", THREADED])
    # moves itself, then execs unshare, which makes a new mount namespace and execs sleep;
    # the propagation stays as it is, since a chroot's "/" (CI) is no mount to change
    script = ('echo $$ > "$0/cgroup.procs" && '
              'exec unshare -m --propagation unchanged sleep 60')
    inner = subprocess.Popen(["sh", "-c", script, str(self_moved)])
    try:
        wait_for(lambda: len(os.listdir(f"/proc/{moved.pid}/task")) == 2, "the second thread")
        tids = sorted(int(t) for t in os.listdir(f"/proc/{moved.pid}/task"))
        wait_for(lambda: all(t in ps(pin_root, pl.proc.pid) for t in tids), "the entries")
        (moved_to / "cgroup.procs").write_text(f"{moved.pid}\n")

        def exec_done() -> bool:
            try:
                return os.readlink(f"/proc/{inner.pid}/exe").endswith("/sleep")
            except OSError:
                return False

        wait_for(exec_done, "unshare to exec sleep")
        procs = ps(pin_root, pl.proc.pid)
        m, i = procs[moved.pid], procs[inner.pid]
        # both threads moved with the process, each entry says so
        assert [procs[t]["cgroup_id"] for t in tids] == [moved_to.stat().st_ino] * 2
        assert [procs[t]["tgid"] for t in tids] == [moved.pid] * 2
        assert m["mnt_ns"] == ns_inode(moved.pid, "mnt") == ns_inode("self", "mnt")
        assert i["comm"] == "sleep" and i["execs"] == 3  # sh, unshare, sleep
        assert i["cgroup_id"] == self_moved.stat().st_ino
        assert i["mnt_ns"] == ns_inode(inner.pid, "mnt") != ns_inode("self", "mnt")
    finally:
        for p in (moved, inner):
            p.kill()
            p.wait()
    assert pl.stop() == 0


# A child subreaper S forks M, which forks C and exits at once: C is reparented to S.
# Once it is, C prints "M C" and waits for a line on stdin; then it forks G, which names
# itself "apanc", creates a file (argv[1]) and waits for a second line, so that the
# whole line of processes is alive when the event is read; S waits for C, and ends
# after it.
_SUBREAPER = r"""
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
s = os.getpid()
m = os.fork()
if m == 0:
    if os.fork() == 0:
        while os.getppid() != s:
            time.sleep(0.01)
        sys.stdout.write(f"{m} {os.getpid()}\n")
        sys.stdout.flush()
        sys.stdin.readline()
        g = os.fork()
        if g == 0:
            with open("/proc/self/comm", "w") as f:
                f.write("apanc")
            os.close(os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY, 0o600))
            sys.stdin.readline()
            os._exit(0)
        os.waitpid(g, 0)
        os._exit(0)
    os._exit(0)
os.waitpid(m, 0)
os.wait()
"""


def test_an_orphan_takes_its_subreaper_as_parent(pipeline_proc: StartPipeline,
                                                 pin_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "ev.jsonl"
    pl = pipeline_proc("--trigger", "tracepoint", "--process-table", "--ancestors", "3",
                       "--filter-comm", "apanc", "--sink", "jsonl", "--output", str(out),
                       "--pin-dir", str(pin_root))
    s = subprocess.Popen([sys.executable, "-c", _SUBREAPER, str(tmp_path / "f")],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert s.stdin is not None and s.stdout is not None
    try:
        m, c = (int(x) for x in s.stdout.readline().split())
        # M is gone and reaped by the run (0.1 s); C's entry names S, as the kernel does
        wait_for(lambda: m not in ps(pin_root, pl.proc.pid), "M to leave the table")
        entry = ps(pin_root, pl.proc.pid)[c]
        with open(f"/proc/{c}/status") as f:
            kernel_ppid = int(next(ln for ln in f if ln.startswith("PPid:")).split()[1])
        assert entry["ppid"] == kernel_ppid == s.pid
        s.stdin.write("go\n")
        s.stdin.flush()
        wait_for(lambda: out.exists() and out.read_text().endswith("\n"), "the event")
        s.stdin.write("done\n")
        s.stdin.flush()
    finally:
        s.stdin.close()
        if s.wait(20) != 0:
            s.kill()
    assert s.returncode == 0
    assert pl.stop() == 0
    (ev,) = [json.loads(ln) for ln in out.read_text().splitlines()]
    # G's parent is C, whose parent is now the subreaper, whose parent is this test
    assert ev["ppid"] == c and ev["proc"] == "known"
    assert [a["pid"] for a in ev["ancestors"]] == [c, s.pid, os.getpid()]
    assert not any(a.get("missing") or a.get("exited") for a in ev["ancestors"])

