"""Events per second when every event comes from a cgroup the reader has not seen: what a
user with a delegated cgroup subtree can make the reader do.

    python -m pipeline.bench.cgroup_burst [--events N] [--tree N] [--mode handle|walk]

As root. A producer (uid 65534 in a subtree delegated to it, as systemd delegates
user@UID.service) makes a new cgroup per file it creates, as fast as it can, while this
process drains the queue as the reader does (pipeline/reader.py), resolving each missed id
by handle (`handle`, pipeline/_core/cgfh.h) or by the whole-tree walk that is the fallback
(`walk`). `--tree` idle cgroups made beforehand stand for a user who made many earlier: a
walk costs time in proportion to them, a handle lookup does not. Prints one JSON line:
events/s from the producer's start to the last event drained, events lost to a full queue,
walks, lookups, and the seconds the reader spent waiting on the walk's rate limit."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .. import _core
from ..cgroups import Cgroups, find_mount

# Run as an unprivileged user inside the delegated cgroup argv[1]: for each i, makes the
# cgroup c<i>, forks a child that moves itself there and creates the file f<i> in argv[2]
# holding its /proc/self/cgroup path, and waits for it.
BURSTER = r"""
import os, sys
base, work, n, comm = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
for i in range(n):
    cg = os.path.join(base, f"c{i}")
    os.mkdir(cg)
    pid = os.fork()
    if pid == 0:
        fd = os.open("/proc/self/comm", os.O_WRONLY)
        os.write(fd, comm.encode())
        os.close(fd)
        fd = os.open(os.path.join(cg, "cgroup.procs"), os.O_WRONLY)
        os.write(fd, b"0")
        os.close(fd)
        with open("/proc/self/cgroup", "rb") as f:
            line = [ln[3:] for ln in f.read().splitlines() if ln.startswith(b"0::")][0]
        fd = os.open(os.path.join(work, f"f{i}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        os.write(fd, line)
        os.close(fd)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if status:
        sys.exit(f"child {i} failed: {status}")
"""


class Timed(Cgroups):
    """Cgroups that adds up the time resolve() spends."""

    waited = 0.0

    async def resolve(self, cid: int) -> None:
        t0 = time.monotonic()
        await super().resolve(cid)
        self.waited += time.monotonic() - t0


def rmdir_tree(d: Path) -> None:
    for child in d.iterdir():
        if child.is_dir() and not child.is_symlink():
            rmdir_tree(child)
    d.rmdir()


async def drain(s: Any, cg: Cgroups, producer: subprocess.Popen[bytes], want: int) -> int:
    got, idle_since = 0, None
    while got < want:
        _, n = s.drain_json(4096)
        got += n
        miss = s.cgroup_miss()
        if miss:
            await cg.resolve(miss)
            idle_since = None
        elif not n:
            if producer.poll() is not None:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > 1.0:
                    break  # the rest were lost to a full queue
            await asyncio.sleep(0.001)
    return got


def run(events: int, tree: int, mode: str, queue: int) -> dict[str, Any]:
    mount = find_mount()
    if mount is None:
        raise SystemExit("cgroup_burst: no cgroup2 file system is mounted")
    base = Path(os.fsdecode(mount.point)) / f"ap-bench-{os.getpid()}-{secrets.token_hex(3)}"
    comm = f"apcb-{secrets.token_hex(4)}"
    base.mkdir()
    deleg = base / "deleg"
    deleg.mkdir()
    work = Path(tempfile.mkdtemp(prefix="ap-bench-cg-"))  # the children's files
    os.chown(work, 65534, 65534)
    try:
        for p in (deleg, deleg / "cgroup.procs"):
            os.chown(p, 65534, 65534)
        idle = base / "idle"
        idle.mkdir()
        for i in range(tree):
            (idle / f"i{i}").mkdir()
        s = _core.Session(arena_pages=max(4096, queue // 2), queue_capacity=queue)
        try:
            s.attach("tracepoint")
            s.set_filter(comm=comm)
            s.enable(True)
            cg = Timed.open(s, direct=(mode == "handle"))
            try:
                t0 = time.monotonic()
                producer = subprocess.Popen(
                    ["sh", "-c", f'echo $$ > "{deleg}/cgroup.procs" && exec "$@"', "sh",
                     "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                     sys.executable, "-c", BURSTER, str(deleg), str(work), str(events), comm])
                got = asyncio.run(drain(s, cg, producer, events))
                elapsed = time.monotonic() - t0
                producer.wait()
                c = cg.counters
                return {"mode": mode, "events": events, "tree": tree, "drained": got,
                        "lost": events - got, "seconds": round(elapsed, 3),
                        "events_per_s": round(got / elapsed, 1), "walks": c.walks,
                        "lookups": c.lookups, "resolve_seconds": round(cg.waited, 3),
                        "dropped_full": s.stats()["dropped_full"],
                        "loadavg": os.getloadavg()[0]}
            finally:
                cg.close()
        finally:
            s.close()
    finally:
        rmdir_tree(base)
        shutil.rmtree(work)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.bench.cgroup_burst",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=3000,
                    help="events, each from a new cgroup (1..1000000; default 3000)")
    ap.add_argument("--tree", type=int, default=0,
                    help="idle cgroups made beforehand (0..1000000; default 0)")
    ap.add_argument("--mode", choices=("handle", "walk"), default="handle")
    ap.add_argument("--queue", type=int, default=1024,
                    help="queue capacity, a power of two (64..65536; default 1024)")
    a = ap.parse_args(argv)
    if not 1 <= a.events <= 1_000_000 or not 0 <= a.tree <= 1_000_000:
        print("cgroup_burst: --events must be 1..1000000 and --tree 0..1000000",
              file=sys.stderr)
        return 2
    if not 64 <= a.queue <= 65536 or a.queue & (a.queue - 1):
        print("cgroup_burst: --queue must be a power of two in 64..65536", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("cgroup_burst: run it as root (it loads BPF programs and makes cgroups)",
              file=sys.stderr)
        return 2
    print(json.dumps(run(a.events, a.tree, a.mode, a.queue)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
