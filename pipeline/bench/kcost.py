"""Kernel time per captured file creation, from the kernel's own BPF statistics.

With `kernel.bpf_stats_enabled=1` the kernel keeps, per BPF program, the time spent in it
(`run_time_ns`) and how often it ran (`run_cnt`); they are readable in the fdinfo of every
descriptor of the program. This module runs the real pipeline (`python -m pipeline
--trigger tracepoint`, stdout sink into /dev/null), then a load process that works in a
tmpfs of its own, in two phases, reading the pipeline's programs' counters before and after
each:

  - create: N files created with open(O_CREAT | O_EXCL) and closed;
  - noop:   the same N files opened again without O_CREAT (a call that creates nothing).

For each phase and each of the pipeline's programs that ran, it reports the runs and the
time, and two summaries:

  - `sum_of_avg_ns`: the average time per run of each program that ran, summed (what one
    creation costs when each of its programs runs once);
  - `ns_per_call`: all the programs' time in the phase divided by the load's N calls (an
    upper bound: calls made meanwhile by other processes are charged to the load).

`--with-filters` runs the pipeline with every kind of kernel filter in force, none of which
drops the load's files: `--include-path` the load's directory, `--exclude-path` a
directory beside it, `--uid 0`; so each creation pays for the uid test and the whole
path's scan with its lookups (the paths are the kernel's, so run it on a real root, not
in a chroot).

`measure()` returns the figures as a dict; `python -m pipeline.bench.kcost [--files N]`
prints them as one JSON object. Needs root. The previous value of the sysctl is put back.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
STATS_SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")

# The load: creates N files in a directory, then opens them again without O_CREAT,
# waiting for a line on stdin before each phase and printing one after it.
LOAD = r"""
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
names = [f"f-{i:07d}" for i in range(n)]
flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY
print("ready", flush=True)
sys.stdin.readline()
for nm in names:
    os.close(os.open(nm, flags, 0o600, dir_fd=fd))
print("created", flush=True)
sys.stdin.readline()
for nm in names:
    os.close(os.open(nm, os.O_RDONLY, dir_fd=fd))
print("opened", flush=True)
"""


def prog_stats(pid: int) -> dict[int, tuple[int, int]]:
    """prog_id -> (run_time_ns, run_cnt) of every BPF program process pid holds open."""
    out: dict[int, tuple[int, int]] = {}
    fd_dir = Path(f"/proc/{pid}/fdinfo")
    for info in fd_dir.iterdir():
        try:
            text = info.read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        if "prog_id" not in fields or "run_time_ns" not in fields:
            continue
        out[int(fields["prog_id"])] = (int(fields["run_time_ns"]), int(fields["run_cnt"]))
    return out


def prog_names(ids: list[int]) -> dict[int, str]:
    res = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True,
                         check=True)
    return {p["id"]: p.get("name", "?") for p in json.loads(res.stdout) if p["id"] in ids}


def _delta(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]],
           names: dict[int, str], calls: int) -> dict[str, Any]:
    progs: dict[str, dict[str, float]] = {}
    total = 0
    for pid, (t1, c1) in after.items():
        t0, c0 = before.get(pid, (0, 0))
        dt, dc = t1 - t0, c1 - c0
        if dc <= 0:
            continue
        total += dt
        progs[names.get(pid, str(pid))] = {"run_cnt": dc, "run_time_ns": dt,
                                           "avg_ns": round(dt / dc, 1)}
    # the programs that ran for the load's calls: once per call, give or take other
    # processes' calls; a program that ran a few times for someone else is listed only
    ran = [p["avg_ns"] for p in progs.values() if p["run_cnt"] >= calls // 2]
    return {"calls": calls, "programs": progs, "sum_of_avg_ns": round(sum(ran), 1),
            "ns_per_call": round(total / calls, 1) if calls else 0.0}


def measure(files: int = 100_000, queue_capacity: int = 0,
            with_filters: bool = False) -> dict[str, Any]:
    """Start the pipeline, run the load, return the figures (see the module's docstring).
    queue_capacity: the pipeline's --queue-capacity (0: its default); with_filters: the
    kernel filters in force, passing every file of the load."""
    old = STATS_SYSCTL.read_text().strip()
    work = Path(tempfile.mkdtemp(prefix="ap-kcost-"))
    mnt = work / "tmpfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m,mode=0700", "ap-kcost", str(mnt)],
                   check=True)
    pl: subprocess.Popen[bytes] | None = None
    load: subprocess.Popen[str] | None = None
    from pipeline import _core

    # held for the whole measure: the kernel counts while any holder or the sysctl asks,
    # so another process putting the sysctl back meanwhile cannot stop the counting
    stats_fd = _core.enable_bpf_stats()
    try:
        STATS_SYSCTL.write_text("1\n")
        extra = ["--queue-capacity", str(queue_capacity)] if queue_capacity else []
        if with_filters:
            extra += ["--include-path", str(mnt), "--exclude-path", str(work / "elsewhere"),
                      "--uid", "0"]
        pl = subprocess.Popen([sys.executable, "-m", "pipeline", "--trigger",
                               "tracepoint", "--sink", "stdout", "--stats", "0", *extra],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        load = subprocess.Popen([sys.executable, "-c", LOAD, str(mnt), str(files)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert load.stdin is not None and load.stdout is not None
        if load.stdout.readline().strip() != "ready":
            raise RuntimeError("the load process did not start")
        # the pipeline produces once it says "ready" (on a loaded machine that can take
        # seconds after its programs are attached)
        assert pl.stderr is not None
        for raw in pl.stderr:
            if b"ready in" in raw:
                break
        else:
            raise RuntimeError("the pipeline exited at start")
        time.sleep(0.5)
        phases: dict[str, Any] = {}
        snaps = [prog_stats(pl.pid)]
        for phase, done in (("create", "created"), ("noop", "opened")):
            load.stdin.write("go\n")
            load.stdin.flush()
            if load.stdout.readline().strip() != done:
                raise RuntimeError(f"the load process failed in phase {phase}")
            snaps.append(prog_stats(pl.pid))
        names = prog_names(list(snaps[-1]))
        phases["create"] = _delta(snaps[0], snaps[1], names, files)
        phases["noop"] = _delta(snaps[1], snaps[2], names, files)
        load.wait(30)
        pl.send_signal(signal.SIGINT)
        _, err = pl.communicate(timeout=60)
        final: dict[str, Any] = {}
        for line in err.decode(errors="replace").splitlines():
            if line.startswith("pipeline: final "):
                final = json.loads(line[len("pipeline: final "):])
        phases["produced"] = final.get("produced")
        phases["files"] = files
        phases["queue_capacity"] = final.get("queue_capacity")
        phases["with_filters"] = with_filters
        return phases
    finally:
        for p in (load, pl):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        STATS_SYSCTL.write_text(old + "\n")
        os.close(stats_fd)
        subprocess.run(["umount", str(mnt)], check=False)
        mnt.rmdir()
        work.rmdir()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.bench.kcost",
                                 description="kernel time per captured file creation")
    ap.add_argument("--files", type=int, default=100_000,
                    help="files created (>= 1 and <= 10000000; default 100000)")
    ap.add_argument("--queue-capacity", type=int, default=0,
                    help="the pipeline's --queue-capacity (0: its default)")
    ap.add_argument("--with-filters", action="store_true",
                    help="run with --include-path, --exclude-path and --uid in force (every "
                         "file of the load passes them)")
    args = ap.parse_args(argv)
    if not 1 <= args.files <= 10_000_000:
        sys.stderr.write("kcost: --files must be >= 1 and <= 10000000\n")
        return 2
    if args.queue_capacity < 0:
        sys.stderr.write("kcost: --queue-capacity must be >= 0 (0: the pipeline's default)\n")
        return 2
    if os.geteuid() != 0:
        sys.stderr.write("kcost: needs root (it loads BPF programs and sets a sysctl); "
                         "run it with sudo\n")
        return 2
    print(json.dumps(measure(args.files, args.queue_capacity, args.with_filters)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
