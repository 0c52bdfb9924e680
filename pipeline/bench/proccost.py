"""Kernel time of the process table's tracepoints, from the kernel's own BPF statistics.

With `kernel.bpf_stats_enabled=1` the kernel keeps each BPF program's run time and run
count (kcost.py reads them from the fdinfo of the pipeline's program descriptors). This
module runs the real pipeline with its process table (`--trigger tracepoint
--process-table`, stdout sink into /dev/null), then build/forkload (pipeline/bench/
forkload.c) in two phases, reading the programs' counters before and after each:

  - fork:  N children that _exit(0) at once: a fork and an exit each;
  - exec:  N children that exec /bin/true: a fork, an exec and an exit each, and the
           files the dynamic loader opens without creating them (syscalls that create
           nothing, which the file-creation programs see and let pass).

For each phase it reports every program that ran (runs, time, average), and the
figures: ns per fork (proc_fork), per exit (proc_exit) and per exec (proc_exec), each
the program's average run time. The counts are machine-wide (other processes' forks are
counted too); the averages are per run. `ancestors`: with `--ancestors 2` an exit marks
its entry for the reader instead of deleting it.

`measure()` returns the figures as a dict; `python -m pipeline.bench.proccost [--procs N]
[--ancestors]` prints them as one JSON object. Needs root; the sysctl is put back.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .kcost import ROOT, STATS_SYSCTL, prog_names, prog_stats
from .tools import program

# the process table's programs (bpf/proctab.bpf.c) and what one run of each stands for
PER = {"proc_fork": "fork", "proc_exec": "exec", "proc_exit": "exit"}
CONCURRENCY = 4  # children alive at once


def _phase(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]],
           names: dict[int, str]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for pid, (t1, c1) in after.items():
        t0, c0 = before.get(pid, (0, 0))
        if c1 - c0 <= 0:
            continue
        out[names.get(pid, str(pid))] = {"run_cnt": c1 - c0, "run_time_ns": t1 - t0,
                                         "avg_ns": round((t1 - t0) / (c1 - c0), 1)}
    return out


def _load(exe: Path, n: int, out: Path, *prog: str) -> None:
    res = subprocess.run([str(exe), str(n), str(CONCURRENCY), str(out), *prog],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"forkload failed: {res.stderr.strip()}")


def measure(procs: int = 20_000, ancestors: bool = False) -> dict[str, Any]:
    """Start the pipeline with its process table, run the two phases, return the figures
    (see the module's docstring)."""
    exe = program("forkload")
    true = shutil.which("true") or "/bin/true"
    old = STATS_SYSCTL.read_text().strip()
    work = Path(tempfile.mkdtemp(prefix="ap-proccost-"))
    pl: subprocess.Popen[bytes] | None = None
    try:
        STATS_SYSCTL.write_text("1\n")
        extra = ["--ancestors", "2"] if ancestors else []
        pl = subprocess.Popen([sys.executable, "-m", "pipeline", "-q", "--trigger", "tracepoint",
                               "--process-table", *extra, "--sink", "stdout", "--stats", "0"],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # the table's programs are loaded after the file-creation ones, then the table is
        # seeded from /proc: measured once they hold descriptors and the seeding is over
        deadline = time.monotonic() + 60
        while not set(PER) <= set(prog_names(list(prog_stats(pl.pid))).values()):
            if pl.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the pipeline did not attach its process table")
            time.sleep(0.2)
        time.sleep(1.0)
        snaps = [prog_stats(pl.pid)]
        _load(exe, procs, work / "fork")
        snaps.append(prog_stats(pl.pid))
        _load(exe, procs, work / "exec", true)
        snaps.append(prog_stats(pl.pid))
        names = prog_names(list(snaps[-1]))
        phases = {"fork": _phase(snaps[0], snaps[1], names),
                  "exec": _phase(snaps[1], snaps[2], names)}
        pl.send_signal(signal.SIGINT)
        _, err = pl.communicate(timeout=60)
        final: dict[str, Any] = {}
        for line in err.decode(errors="replace").splitlines():
            if line.startswith("pipeline: final "):
                final = json.loads(line[len("pipeline: final "):])
        ns = {f"ns_per_{what}": phases["exec" if what == "exec" else "fork"]
              .get(prog, {}).get("avg_ns", 0.0) for prog, what in PER.items()}
        # the exec phase's other programs: the file-creation ones, seeing the loader's opens
        nocreate = {k: v for k, v in phases["exec"].items()
                    if not k.startswith(("proc_", "ds_"))}
        return {"procs": procs, "ancestors": ancestors, **ns,
                "ns_per_exit_and_fork_in_exec_phase": {
                    w: phases["exec"].get(p, {}).get("avg_ns", 0.0)
                    for p, w in PER.items() if w != "exec"},
                "syscall_programs_in_exec_phase": nocreate, "phases": phases,
                "process_table": final.get("process_table")}
    finally:
        if pl is not None and pl.poll() is None:
            pl.kill()
            pl.wait()
        STATS_SYSCTL.write_text(old + "\n")
        for f in work.iterdir():
            f.unlink()
        work.rmdir()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.bench.proccost",
                                 description="kernel time of the process table's tracepoints")
    ap.add_argument("--procs", type=int, default=20_000,
                    help="processes per phase (>= 1 and <= 1000000; default 20000)")
    ap.add_argument("--ancestors", action="store_true",
                    help="run the pipeline with --ancestors 2 (exits keep their entries for "
                         "the reader)")
    args = ap.parse_args(argv)
    if not 1 <= args.procs <= 1_000_000:
        sys.stderr.write("proccost: --procs must be >= 1 and <= 1000000\n")
        return 2
    if os.geteuid() != 0:
        sys.stderr.write("proccost: needs root (it loads BPF programs and sets a sysctl); "
                         "run it with sudo\n")
        return 2
    print(json.dumps(measure(args.procs, args.ancestors)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
