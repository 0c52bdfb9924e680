"""The process table (include/proc.h) from Python: its entries, seeding it from /proc,
and reading it back.

The kernel keeps the table (bpf/proctab.bpf.c): a hash named "proc" in the run's
data-structure space, pid -> entry. Tasks that existed before the tracepoints were
attached are read from /proc and inserted by worker processes attached to the run's
arena (seed, pool_seed): batched inserts in C, each entry flagged as seeded. A
snapshot copies every live entry inside an epoch section, each under its sequence
word, so it is consistent entry by entry.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from . import _ds
from .ds import Arena

TABLE = "proc"  # the hash's name in the space
# struct ap_proc: seq, pid, tgid, ppid, flags, start_ns, uid, euid, gid, mnt_ns,
# cgroup_id, pid_ns, execs, comm, exe_len, pad, exit_ns, exit_mark, exit_next, exe (the path
# ends at the end of the field)
ENTRY = struct.Struct(f"<QIIIIQIIIIQII16sIIQQQ{_ds.PROC_EXE_CAP}s")
assert ENTRY.size == _ds.PROC_ENTRY_SIZE, "include/proc.h and this codec disagree"


@dataclass(frozen=True)
class Proc:
    pid: int
    tgid: int
    ppid: int
    flags: int
    start_ns: int
    uid: int
    euid: int
    gid: int
    mnt_ns: int
    cgroup_id: int
    pid_ns: int
    execs: int
    comm: bytes
    exe: bytes = b""  # the executable's path; its last bytes only when exe_truncated
    exit_ns: int = 0  # CLOCK_MONOTONIC, when exited (kept until the reader is past it)

    @property
    def seeded(self) -> bool:
        return bool(self.flags & _ds.PROC_SEEDED)

    @property
    def exited(self) -> bool:
        return bool(self.flags & _ds.PROC_EXITED)

    @property
    def exe_truncated(self) -> bool:
        return bool(self.flags & _ds.PROC_EXE_TRUNCATED)

    def pack(self) -> bytes:
        exe = self.exe[-_ds.PROC_EXE_CAP:]
        return ENTRY.pack(0, self.pid, self.tgid, self.ppid, self.flags, self.start_ns, self.uid,
                          self.euid, self.gid, self.mnt_ns, self.cgroup_id, self.pid_ns,
                          self.execs, self.comm, len(exe), 0, 0, 0, 0,
                          exe.rjust(_ds.PROC_EXE_CAP, b"\0"))

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["comm"] = self.comm.decode("utf-8", "replace")
        d["exe"] = self.exe.decode("utf-8", "surrogateescape")
        d["exe_truncated"] = self.exe_truncated
        d["seeded"] = self.seeded
        d["exited"] = self.exited
        return d


def unpack(raw: bytes) -> list[Proc]:
    out = []
    for (_, pid, tgid, ppid, flags, start_ns, uid, euid, gid, mnt_ns, cgroup_id, pid_ns, execs,
         comm, exe_len, _, exit_ns, _, _, exe) in ENTRY.iter_unpack(raw):
        n = min(exe_len, _ds.PROC_EXE_CAP)
        out.append(Proc(pid, tgid, ppid, flags, start_ns, uid, euid, gid, mnt_ns, cgroup_id,
                        pid_ns, execs, comm.split(b"\0", 1)[0],
                        exe[_ds.PROC_EXE_CAP - n:] if n else b"", exit_ns))
    return out


def snapshot(arena: Arena, cap: int = 1 << 16) -> list[Proc]:
    """Every live entry of the arena's process table, by pid."""
    table = arena.lookup(TABLE)
    return sorted(unpack(arena._core.proc_snapshot(table.address, cap)), key=lambda p: p.pid)


# The tracepoints never sleep, so they allocate from per-CPU page pools that only a
# sleepable program can fill: a fork burst between two refills that empties a pool is
# counted (nomem), not waited for. So the refills (and the reaps, which give exited
# entries' memory back) come every 0.1 s while forks are few, and every 10 ms after a
# period with a burst (at least FAST_FORKS forks, or any fork without memory); each quiet
# period doubles the interval back towards 0.1 s.
REFILL_EVERY = 0.1  # seconds
REFILL_FASTEST = 0.01  # seconds
FAST_FORKS = 32  # forks in one period that make the next one shorter


def next_interval(interval: float, forks: int, nomem: int, every: float = REFILL_EVERY) -> float:
    """The wait before the next refill, after a period with `forks` forks and `nomem`
    forks that found no memory."""
    if nomem or forks >= FAST_FORKS:
        return min(REFILL_FASTEST, every)
    return min(every, interval * 2)


async def keep_pools_filled(arena: Arena, every: float = REFILL_EVERY,
                            reap: Callable[[], int] | None = None) -> None:
    """Refill the kernel CPUs' page pools of the table's heap, and reap the exited entries
    no queued event needs (reap: the session's proc_reap), so they do not wait for the
    next event while the queue is idle: every `every` seconds, more often during fork
    bursts (next_interval)."""
    table = arena.lookup(TABLE)
    interval = every
    last = counts(arena)
    while True:
        table.refill()
        if reap is not None:
            reap()
        await asyncio.sleep(interval)
        now = counts(arena)
        interval = next_interval(interval, now["forks"] - last["forks"],
                                 now["nomem"] - last["nomem"], every)
        last = now


# ---- seeding from /proc ----

def _ns_inode(pid: int, ns: str) -> int:
    try:
        return os.stat(f"/proc/{pid}/ns/{ns}").st_ino
    except OSError:
        return 0


def _cgroup_id(pid: int) -> int:
    """The task's cgroup v2 id: the inode of its directory under /sys/fs/cgroup."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    return os.stat("/sys/fs/cgroup" + line[3:].rstrip("\n")).st_ino
    except OSError:
        pass
    return 0


def _status(tid_dir: str) -> dict[str, list[str]]:
    with open(f"{tid_dir}/status") as f:
        return {k: v.split() for k, _, v in (line.partition(":") for line in f)}


def read_exe(pid: int) -> tuple[bytes, int]:
    """The process's executable path and the flag for it: readlink only (the link's text,
    nothing behind it is opened or followed). A path longer than the entry holds keeps
    its last components, starting at a '/', flagged truncated; none (a kernel thread, a
    process gone, or not permitted): empty."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe".encode())
    except OSError:
        return b"", 0
    cap = _ds.PROC_EXE_CAP
    if len(exe) <= cap:
        return exe, 0
    tail = exe[-cap:]
    cut = tail.find(b"/")
    return (tail[cut:] if cut >= 0 else b""), _ds.PROC_EXE_TRUNCATED


def read_task(pid: int, tid: int) -> Proc | None:
    """One task as /proc shows it, or None when it is gone (or unreadable)."""
    d = f"/proc/{pid}/task/{tid}"
    try:
        st = _status(d)
        with open(f"{d}/stat", "rb") as f:
            stat = f.read()
        with open(f"{d}/comm", "rb") as f:
            comm = f.read().rstrip(b"\n")[:15]
    except (OSError, ValueError):
        return None
    # fields after the comm's closing parenthesis: state is field 3, starttime field 22
    rest = stat[stat.rfind(b")") + 2:].split()
    ticks = os.sysconf("SC_CLK_TCK")
    start_ns = int(rest[19]) * 1_000_000_000 // ticks
    exe, exe_flags = read_exe(pid)
    return Proc(pid=tid, tgid=int(st["Tgid"][0]), ppid=int(st["PPid"][0]), flags=exe_flags,
                start_ns=start_ns, uid=int(st["Uid"][0]), euid=int(st["Uid"][1]),
                gid=int(st["Gid"][0]), mnt_ns=_ns_inode(pid, "mnt"), cgroup_id=_cgroup_id(pid),
                pid_ns=_ns_inode(pid, "pid"), execs=0, comm=comm, exe=exe)


def tasks() -> Iterator[tuple[int, int]]:
    """(pid, tid) of every task /proc lists now."""
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                tids = os.listdir(f"/proc/{name}/task")
            except OSError:
                continue
            for t in tids:
                if t.isdigit():
                    yield int(name), int(t)


def seed(arena: Arena, pairs: Iterable[tuple[int, int]]) -> tuple[int, int, int]:
    """Insert these tasks from /proc, in one C batch: (inserted, present, nomem). A task the
    kernel has inserted since (it forked after the tracepoints were attached) is left as
    the kernel wrote it."""
    found = [p for p in (read_task(pid, tid) for pid, tid in pairs) if p is not None]
    table = arena.lookup(TABLE)
    return arena._core.proc_seed(table.address, b"".join(p.pack() for p in found))


def seed_chunk(pairs: list[tuple[int, int]]) -> tuple[int, int, int]:
    """A pool worker's share of the seeding (pipeline.pool: attached to the run's pins)."""
    from . import pool

    assert pool._ARENA is not None, "worker not attached"
    return seed(pool._ARENA, pairs)


def pool_seed(run_dir: str, workers: int = 2) -> tuple[int, int, int]:
    """Seed the run's table from /proc with worker processes attached through its pins."""
    from .pool import Pool

    todo = list(tasks())
    chunks = [todo[i::workers] for i in range(workers)]
    totals = [0, 0, 0]
    with Pool.for_run(run_dir, workers) as p:
        for f in [p.submit(seed_chunk, c) for c in chunks if c]:
            for i, v in enumerate(f.result()):
                totals[i] += v
    return totals[0], totals[1], totals[2]


def counts(arena: Arena) -> dict[str, int]:
    """The table's counters (include/proc.h, struct ap_proc_counts) as the run's root holds
    them now, read in place by any process attached to the run's arena."""
    return arena._core.proc_counts()
