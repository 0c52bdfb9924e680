"""A pid used again while the reader still holds its exited entry: the fork takes the key
over (counted reused), the reader's reap retires the exited entry and leaves the new
one, whose own exit is reaped in turn. The new process gets the old pid on purpose
(clone3 with set_tid), so the order is fixed: exit, fork with the same pid, reap."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from conftest import needs_root

pytestmark = needs_root

# clone3 with set_tid = [argv[1]]: the child execs sleep; the parent prints its pid (or
# "EEXIST" when another process took the pid first) and waits for it
_SETPID = r"""
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
tid = (ctypes.c_int32 * 1)(int(sys.argv[1]))
args = (ctypes.c_uint64 * 11)(0, 0, 0, 0, 17, 0, 0, 0, ctypes.addressof(tid), 1, 0)
pid = libc.syscall(435, ctypes.byref(args), ctypes.c_size_t(88))  # SYS_clone3
if pid == 0:
    os.execv("/bin/sleep", ["sleep", "60"])
if pid < 0:
    e = ctypes.get_errno()
    print("EEXIST" if e == errno.EEXIST else f"error {os.strerror(e)}", flush=True)
    sys.exit(0)
print(pid, flush=True)
os.waitpid(pid, 0)
"""


def _procs(a: Any) -> dict[int, Any]:
    from pipeline import proctab

    return {p.pid: p for p in proctab.snapshot(a)}


def _wait(pred: Any) -> None:
    deadline = time.monotonic() + 20
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _reuse_once(s: Any, a: Any) -> bool:
    """One round: False when another process's fork took the pid before ours."""
    old = subprocess.Popen(["sleep", "60"])
    pid = old.pid
    _wait(lambda: pid in _procs(a))
    old.kill()
    old.wait()
    _wait(lambda: _procs(a)[pid].exited)
    c0 = s.proc_counts()
    setter = subprocess.Popen([sys.executable, "-c", _SETPID, str(pid)],
                              stdout=subprocess.PIPE, text=True)
    assert setter.stdout is not None
    got = setter.stdout.readline().strip()
    if got == "EEXIST":
        setter.wait()
        s.proc_reap()
        return False
    assert int(got) == pid
    _wait(lambda: _procs(a)[pid].comm == b"sleep" and not _procs(a)[pid].exited)
    c1 = s.proc_counts()
    assert c1["reused"] - c0["reused"] == 1
    assert s.proc_reap() >= 1  # retires the old entry, leaves the new one
    new = _procs(a)[pid]
    assert (new.exited, new.ppid, new.comm) == (False, setter.pid, b"sleep")
    os.kill(pid, signal.SIGTERM)  # the setter's child: no kill(1) on a minimal system
    setter.wait()
    _wait(lambda: pid not in _procs(a) or _procs(a)[pid].exited)
    s.proc_reap()
    assert pid not in _procs(a)
    return True


def test_a_reused_pid_keeps_the_new_entry_through_the_reap() -> None:
    from pipeline import _core
    from pipeline.ds import Arena

    s = _core.Session(arena_pages=8192, queue_capacity=1024)
    a = None
    try:
        s.attach_proctab()
        a = Arena.of_session(s)
        s.set_ancestors(2)  # exits leave their entries to this reader
        assert any(_reuse_once(s, a) for _ in range(5)), "another fork took the pid each time"
    finally:
        # a failure here must not leave the arena mapped for the next tests of this process
        if a is not None:
            a.close()
        s.close()
