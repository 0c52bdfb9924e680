"""What a creation costs in instructions, inside a test VM booted with instruction counting
(scripts/vm-cost.py boots it: one CPU, `-icount`, so the guest's clocks advance one
nanosecond per instruction and a process's CPU time is the instructions it ran).

Runs build/createload (the overhead benchmark's load: openat(O_CREAT|O_EXCL) + close on
tmpfs) in blocks of --rounds loops: with nothing attached; with the floor (an empty program
on each of the fallback's tracepoints, bpf/bench_floor.bpf.o); with the pipeline on
`--trigger tracepoint`; with the LSM floor (an empty program on each of the LSM producer's
hooks, bpf/bench_floor_lsm.bpf.o); with the pipeline on `--trigger lsm`. Each pipeline is
started once for its block (under emulation a start takes about a minute). A block with
nothing attached comes before the first and after each other block. Each loop of a pipeline
block is followed by a second loop while the kernel counts the pipeline's BPF run time, in
instructions per event here.

Prints tagged lines on the console for the host: COST-INFO, COST <who> <instructions per
creation>, COST-BPF <who> <BPF instructions per event>, COST-CAPTURED <who> <events>
<creations>. argv: REPO FILES ROUNDS."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(sys.argv[1])
sys.path.insert(0, str(REPO))

from pipeline.bench import bpfstats  # noqa: E402
from pipeline.bench.part_overhead import (  # noqa: E402
    VM_COST_FLOORS,
    CreateLoad,
    Floor,
    then_files_for,
    tracer_stats,
)

READY_TIMEOUT = 900.0
WHERE = Path("/tmp")  # a tmpfs in the guest


def _loop(scratch: Path, files: int, counted: int,
          pipeline: subprocess.Popen[str] | None, floor: Floor | None) -> tuple[float, float]:
    """One timed loop, then a counted one: instructions per creation, and the BPF programs'
    run time per creation of the counted loop (0 with nothing attached)."""
    load = CreateLoad(scratch, files, counted, WHERE)
    try:
        info = load.go()
        with bpfstats.Enabled():
            before = tracer_stats(pipeline, floor)
            then = load.go_then()
            after = tracer_stats(pipeline, floor)
    finally:
        load.close()
    st = bpfstats.delta(before, after)
    return (1e9 * info["cpu_seconds"] / info["created"],
            st.run_time_ns / then["created"])


def _start(trigger: str, out: Path) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-m", "pipeline", "--trigger", trigger, "--sink",
                          "jsonl", "--output", str(out), "--filter-comm", "createload"],
                         cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    assert p.stderr is not None
    t0 = time.monotonic()
    seen = []
    for line in p.stderr:
        seen.append(line.strip())
        if "ready in" in line:
            print(f"COST-INFO {trigger} started in {time.monotonic() - t0:.0f} s", flush=True)
            return p
        if time.monotonic() - t0 > READY_TIMEOUT:
            break
    p.kill()
    raise SystemExit(f"cost: the pipeline on {trigger} did not start: {' | '.join(seen)}")


def _block(scratch: Path, who: str, files: int, counted: int, rounds: int) -> None:
    pipeline = floor = None
    out = scratch / f"cost-{who}.jsonl"
    try:
        if who in VM_COST_FLOORS:
            floor = Floor(VM_COST_FLOORS[who])
        elif who != "none":
            pipeline = _start(who, out)
        for _ in range(rounds):
            per, bpf = _loop(scratch, files, counted, pipeline, floor)
            print(f"COST {who} {per:.1f}", flush=True)
            if who != "none":
                print(f"COST-BPF {who} {bpf:.1f}", flush=True)
    finally:
        if floor is not None:
            floor.close()
        if pipeline is not None:
            pipeline.send_signal(signal.SIGINT)
            pipeline.communicate(timeout=600)
    if pipeline is not None:
        with open(out, "rb") as f:
            events = sum(1 for line in f if line.startswith(b"{"))
        print(f"COST-CAPTURED {who} {events} {rounds * (files + counted)}", flush=True)


def main() -> None:
    files, rounds = int(sys.argv[2]), int(sys.argv[3])
    counted = then_files_for(files)
    scratch = Path(tempfile.mkdtemp(dir=WHERE))
    print(f"COST-INFO kernel {os.uname().release} files {files} counted {counted} "
          f"rounds {rounds} cpus {os.cpu_count()}", flush=True)
    _block(scratch, "none", files, counted, rounds)
    for who in ("floor", "tracepoint", "floor_lsm", "lsm"):
        _block(scratch, who, files, counted, rounds)
        _block(scratch, "none", files, counted, rounds)


if __name__ == "__main__":
    main()
