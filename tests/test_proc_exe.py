"""The executable's path in the process table: written by the kernel at fork and exec
(the dentry/mount walk of the events' paths), by seeding from /proc/PID/exe (readlink),
and given for the event's process, its parent and each ancestor. Real processes."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from conftest import CHROOTED, inside_chroot, needs_root
from helpers.proc_churn import churn
from test_proctab import _CREATOR, _SH, _anc, _comm, _procs

pytestmark = needs_root

# the path's bytes are not UTF-8 and hold a quote and a space: the JSON rules of `path`
MID_NAME = 'ap exe"\udcffmid'


def _copy(src: str, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    os.chmod(dst, 0o755)
    return dst


def _session() -> Any:
    from pipeline import _core

    s = _core.Session(arena_pages=8192, queue_capacity=1024)
    s.attach_proctab()
    return s


def _wait(path: Path) -> None:
    deadline = time.monotonic() + 20
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert path.exists(), "the creator did not run"


class Behind:
    """Takes the chroot's location off the exe paths the kernel wrote (CI's fresh root is
    a chroot; seeded paths from /proc are already the process's own view)."""

    def __init__(self, prefix: bytes) -> None:
        self.b, self.s = prefix, prefix.decode("utf-8", "replace")

    def __call__(self, v: Any) -> Any:
        if isinstance(v, bytes) and self.b and v.startswith(self.b + b"/"):
            return v[len(self.b):]
        if isinstance(v, str) and self.s and v.startswith(self.s + "/"):
            return v[len(self.s):]
        return v

    def b64(self, v: str) -> str:
        return base64.b64encode(self(base64.b64decode(v))).decode()

    def event(self, ev: dict[str, Any]) -> dict[str, Any]:
        ev = dict(ev, exe=self(ev["exe"]), parent_exe=self(ev["parent_exe"]),
                  ancestors=[dict(a, exe=self(a["exe"])) for a in ev["ancestors"]])
        for d in (ev, *ev["ancestors"]):
            for k in ("exe_b64", "parent_exe_b64"):
                if k in d:
                    d[k] = self.b64(d[k])
        return ev


def test_exe_of_an_exec_tree_in_the_table_and_the_events(tmp_path: Path) -> None:
    from pipeline import proctab
    from pipeline.ds import Arena

    mid = _copy(_SH, tmp_path / MID_NAME)
    mid_b = os.fsencode(mid)
    target = tmp_path / "f"
    s = _session()
    try:
        a = Arena.of_session(s)
        proctab.seed(a, proctab.tasks())  # this process and its ancestors
        s.set_ancestors(3)
        s.set_filter(comm="apanc")
        s.attach("tracepoint")
        s.enable(True)
        # sh -> the copied shell -> python (the creator): three exec'd binaries
        top = subprocess.Popen(["sh", "-c", '"$0" -c "$1" "$2" "$3" "$4"; true', str(mid),
                                '"$0" -c "$1" "$2"; true', sys.executable, _CREATOR,
                                str(target)], stdin=subprocess.PIPE)
        try:
            _wait(target)
            time.sleep(0.1)
            data, n = s.drain_json(100)  # while the whole tree still runs
            procs = _procs(a)
        finally:
            assert top.stdin is not None
            top.stdin.close()
            top.wait()
        a.close()
    finally:
        s.close()
    (ev,) = [json.loads(ln) for ln in data.splitlines()]
    where = str(os.path.realpath(target))
    assert ev["path"] == where or (CHROOTED and ev["path"].endswith(where)), ev["path"]
    behind = Behind(os.fsencode(ev["path"][:len(ev["path"]) - len(where)]))
    ev = behind.event(ev)
    leaf, mid_pid = ev["pid"], ev["ppid"]
    py = os.path.realpath(sys.executable)
    assert n == 1 and procs[mid_pid].ppid == top.pid
    # the table: each entry names the file its last exec ran, whole
    assert [(behind(procs[p].exe), procs[p].exe_truncated) for p in (leaf, mid_pid, top.pid)] == [
        (os.fsencode(py), False), (mid_b, False), (os.fsencode(_SH), False)]
    # the event: its process, its parent (not UTF-8: shown with U+FFFD, exact in _b64)
    shown = mid_b.decode("utf-8", "replace")
    assert (ev["proc"], ev["exe"], ev["exe_truncated"]) == ("known", py, False)
    assert "exe_b64" not in ev
    assert (ev["parent_exe"], ev["parent_exe_truncated"]) == (shown, False)
    assert base64.b64decode(ev["parent_exe_b64"]) == mid_b
    assert ev["ancestors"] == [
        {"pid": mid_pid, "comm": os.fsencode(MID_NAME)[:15].decode("utf-8", "replace"),
         "exe": shown, "exe_b64": base64.b64encode(mid_b).decode(), "exe_truncated": False},
        _anc(top.pid, "sh", _SH),
        _anc(os.getpid(), _comm(os.getpid())),
    ]


def test_exe_of_seeded_and_forked_processes_long_paths_flagged(tmp_path: Path) -> None:
    from pipeline import _ds, proctab
    from pipeline.ds import Arena

    sleep = os.path.realpath(shutil.which("sleep") or "/bin/sleep")
    named = _copy(sleep, tmp_path / "ap-seeded-sleep")
    deep = tmp_path
    for c in "abc":
        deep = deep / (c * 200)
    deep.mkdir(parents=True)
    far = _copy(sleep, deep / "ap-deep-sleep")
    full = os.fsencode(far)
    assert len(full) > _ds.PROC_EXE_CAP
    early = [subprocess.Popen([str(named), "60"]), subprocess.Popen([str(far), "60"])]
    late: subprocess.Popen[bytes] | None = None
    s = _session()
    try:
        a = Arena.of_session(s)
        proctab.seed(a, proctab.tasks())
        late = subprocess.Popen([str(far), "60"])  # forked and exec'd under the tracepoints
        deadline = time.monotonic() + 10
        procs = _procs(a)
        while time.monotonic() < deadline and (late.pid not in procs or
                                               procs[late.pid].execs == 0):
            time.sleep(0.02)
            procs = _procs(a)
        a.close()
    finally:
        s.close()
        for p in [*early, *([late] if late else [])]:
            p.kill()
            p.wait()
    assert late is not None
    e_named, e_far, e_late = procs[early[0].pid], procs[early[1].pid], procs[late.pid]
    assert (e_named.seeded, e_named.exe, e_named.exe_truncated) == (True, os.fsencode(named),
                                                                    False)
    # too long for the entry: its last components, starting at a '/', flagged; never a
    # silently shortened path, and the kernel's walk and the seeding agree on the cut
    want = full[-_ds.PROC_EXE_CAP:]
    want = want[want.index(b"/"):]
    assert (e_far.seeded, e_far.exe, e_far.exe_truncated) == (True, want, True)
    assert (e_late.seeded, e_late.execs, e_late.exe, e_late.exe_truncated) == (False, 1, want,
                                                                               True)


def test_exited_entries_are_kept_until_drained_then_none_left(tmp_path: Path) -> None:
    """3,000 short-lived processes that each create a file: every entry stays, exited,
    until the reader has formatted its event; after the drain the table holds none of
    them and everything retired is freed."""

    from pipeline import _core
    from pipeline.ds import Arena

    touch = os.path.realpath(shutil.which("touch") or "/bin/touch")
    s = _core.Session(arena_pages=8192, queue_capacity=4096)
    try:
        s.attach_proctab()
        s.set_ancestors(1)
        s.set_filter(comm="touch")
        s.attach("tracepoint")
        s.enable(True)
        a = Arena.of_session(s)
        pids = churn(a, lambda i: [touch, str(tmp_path / str(i))], 3000)
        held = _procs(a)
        events: list[dict[str, Any]] = []
        while True:
            data, n = s.drain_json(4096)
            if not n:
                break
            events += [json.loads(ln) for ln in data.splitlines()]
        after = _procs(a)
        c = s.proc_counts()
        assert a.synchronize()
        ep = a.epoch_stats()
        pages = a.heap_stats()["pages_in_use"]
        a.close()
    finally:
        s.close()
    assert c["nomem"] == 0 and c["busy"] == 0
    # before the drain: every one of them there, marked exited
    assert all(held[p].exited and inside_chroot(held[p].exe, os.fsencode(touch))
               == os.fsencode(touch) for p in pids)
    # each event named its process as exited, with its executable
    mine = {e["pid"]: e for e in events if e["pid"] in set(pids)}
    assert sorted(mine) == sorted(pids)
    assert {(e["proc"], inside_chroot(e["exe"], touch))
            for e in mine.values()} == {("exited", touch)}
    # after it: none left, and what was retired is freed
    assert not set(pids) & set(after)
    assert c["reaped"] >= 3000
    assert ep["pending"] == 0 and ep["freed"] == ep["retired"]
    assert pages < 64


def test_an_idle_queue_does_not_hold_exited_entries() -> None:
    """No event waits in the queue: proc_reap (the run's timer) takes the exited entries
    out without a drain."""
    from pipeline.ds import Arena

    s = _session()
    try:
        s.set_ancestors(0)
        a = Arena.of_session(s)
        pids = []
        for _ in range(20):
            p = subprocess.Popen(["/bin/true"])
            p.wait()
            pids.append(p.pid)
        held = _procs(a)
        reaped = s.proc_reap()
        after = _procs(a)
        a.close()
    finally:
        s.close()
    assert all(held[p].exited for p in pids)
    assert reaped >= 20 and not set(pids) & set(after)
