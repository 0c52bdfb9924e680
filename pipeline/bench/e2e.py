"""End to end into a JSONL file, same load for every contender: a C load
generator calls getppid in a tight loop on CPU 0; the raw sys_enter tracepoint,
filtered on getppid's number and the generator's pid, makes one event of each
call; the consumer runs on CPU 1.

Contenders, one after the other in the same run:
  - c_drain:  C alone drains the arena queue (no formatting, no writing);
  - pipeline: `python -m pipeline --sink jsonl` (C drain + format, asyncio, aiofiles);
  - bcc:      a BCC Python pipeline (ring buffer, Python callback, json.dumps).
Rate = events that reached the consumer's output / the load's own duration.
"""

from __future__ import annotations

import json
import mmap
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .tools import ROOT, bcc_missing, program

if TYPE_CHECKING:
    from .progress import Progress

BCC_SCRIPT = Path(__file__).resolve().parent / "bcc_baseline.py"
LOAD_CPU, CONSUMER_CPU = "0", "1"


# Memory made host-backed before each contender's load, per second of load: about what
# the fastest contender's output takes in the page cache (see Warm).
WARM_BYTES_PER_SECOND = 1536 << 20


class Warm:
    """Guest memory faulted in now and handed back to the kernel at go().

    Virtual machines like this one back guest memory lazily and take free memory back (free
    page reporting): the first touch of such a page costs a trip to the hypervisor. Populating
    new memory runs at 0.38-0.65 GB/s here against 3.5 GB/s for memory already backed
    (`mmap(MAP_POPULATE)` of 3 GB). A contender writing hundreds of MB/s into the page cache
    would then measure the hypervisor. Every contender gets the same warm-up, released the
    moment its load starts, so that its new page-cache pages are backed as on bare metal.
    """

    def __init__(self, nbytes: int) -> None:
        self.map: mmap.mmap | None = None
        if nbytes > 0:
            flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)
            self.map = mmap.mmap(-1, nbytes, flags=flags)

    def release(self) -> None:
        if self.map is not None:
            self.map.close()
            self.map = None


class Load:
    """The load generator, started paused so its pid can be filtered on."""

    def __init__(self, tmp: Path, seconds: float, warm: bool) -> None:
        self.start_file = tmp / f"go-{time.monotonic_ns()}"
        self.proc = subprocess.Popen([str(program("loadgen")), "--seconds", str(seconds),
                                      "--cpu", LOAD_CPU, "--start-file", str(self.start_file)],
                                     stdout=subprocess.PIPE, text=True)
        self.pid = self.proc.pid
        self.warm = Warm(int(seconds * WARM_BYTES_PER_SECOND) if warm else 0)

    def go(self) -> None:
        self.warm.release()
        self.start_file.touch()

    def kill(self) -> None:
        self.warm.release()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def finish(self) -> dict[str, Any]:
        out, _ = self.proc.communicate(timeout=120)
        if self.proc.returncode != 0:
            raise RuntimeError(f"loadgen failed ({self.proc.returncode})")
        return dict(json.loads(out))


def run_c_drain(tmp: Path, seconds: float, warm: bool = True) -> dict[str, Any]:
    load = Load(tmp, seconds, warm)
    try:
        return _c_drain(load)
    finally:
        load.kill()


def _c_drain(load: Load) -> dict[str, Any]:
    from .. import _core

    s = _core.Session(arena_pages=32768, queue_capacity=65536)
    old = os.sched_getaffinity(0)
    try:
        s.attach("getppid")
        s.set_filter(pid=load.pid)
        s.enable(True)
        os.sched_setaffinity(0, {int(CONSUMER_CPU)})
        drained = 0
        load.go()
        while load.proc.poll() is None:
            n = s.drain_discard(65536)[0]
            drained += n
            if n < 4096:
                # a consumer that polls the producer's next slot nonstop
                # steals that cache line back and forth and slows the
                # producer; drain in batches like a real consumer does
                time.sleep(0.0002)
        s.detach()
        while True:
            n = s.drain_discard(65536)[0]
            if not n:
                break
            drained += n
        st = s.stats()
        info = load.finish()
    finally:
        os.sched_setaffinity(0, old)
        s.close()
    return {"written": drained, "produced": st["produced"],
            "lost": st["dropped_full"] + st["dropped_busy"], "load_seconds": info["seconds"],
            "load_calls": info["calls"], "events_per_s": drained / info["seconds"]}


def run_pipeline(tmp: Path, seconds: float, warm: bool = True) -> dict[str, Any]:
    load = Load(tmp, seconds, warm)
    try:
        return _pipeline(tmp, load)
    finally:
        load.kill()


def pipeline_round(load: Load, sink_args: list[str], what: str = "pipeline"
                   ) -> tuple[dict[str, Any], dict[str, Any], str]:
    """One round of the pipeline against `load`: started on the consumer's CPU with
    `sink_args`, the load released once it is ready, stopped with SIGINT after the load.
    Returns the pipeline's final statistics, the load's own report and the pipeline's
    stderr."""
    p = subprocess.Popen(
        ["taskset", "-c", CONSUMER_CPU, sys.executable, "-m", "pipeline", *sink_args,
         "--trigger", "getppid", "--filter-pid", str(load.pid),
         "--batch", "16384", "--pin-dir", "/sys/fs/bpf/arena-pipeline-bench"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert p.stderr is not None
    lines: list[str] = []
    for line in p.stderr:
        lines.append(line)
        if "ready in" in line:
            break
    else:
        p.wait()
        raise RuntimeError(f"{what} did not start: " + "".join(lines))
    load.go()
    info = load.finish()
    p.send_signal(signal.SIGINT)
    _, rest = p.communicate(timeout=120)
    final = next((json.loads(ln.split("final ", 1)[1]) for ln in rest.splitlines()
                  if ln.startswith("pipeline: final ")), None)
    if final is None:
        raise RuntimeError(f"{what} gave no final statistics: " + rest)
    return final, info, rest


def _pipeline(tmp: Path, load: Load) -> dict[str, Any]:
    out = tmp / "pipeline.jsonl"
    final, info, _ = pipeline_round(load, ["--sink", "jsonl", "--output", str(out)])
    with open(out, "rb") as f:
        written = sum(1 for _ in f)
    lost = sum(final["dropped"].values())
    return {"written": written, "produced": final["produced"], "lost": lost,
            "load_seconds": info["seconds"], "load_calls": info["calls"],
            "events_per_s": written / info["seconds"]}


def run_bcc(tmp: Path, seconds: float, warm: bool = True) -> dict[str, Any]:
    load = Load(tmp, seconds, warm)
    try:
        return _bcc(tmp, load, seconds)
    finally:
        load.kill()


def _bcc(tmp: Path, load: Load, seconds: float) -> dict[str, Any]:
    out = tmp / "bcc.jsonl"
    ready = tmp / "bcc.ready"
    env = dict(os.environ)
    kh = subprocess.run(["bash", str(ROOT / "scripts" / "setup-bcc.sh")], capture_output=True,
                        text=True)
    if kh.returncode == 0 and kh.stdout.strip():
        env["BCC_KERNEL_SOURCE"] = kh.stdout.strip().splitlines()[-1]
    p = subprocess.Popen(
        ["taskset", "-c", CONSUMER_CPU, "/usr/bin/python3", str(BCC_SCRIPT), "--output", str(out),
         "--duration", str(seconds + 3.0), "--pid", str(load.pid), "--ready-file", str(ready)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120  # BCC compiles its C at start
    while not ready.exists():
        if p.poll() is not None or time.monotonic() > deadline:
            p.kill()
            _, err = p.communicate()
            raise RuntimeError("BCC baseline did not start: " + err.strip()[-500:])
        time.sleep(0.05)
    load.go()
    info = load.finish()
    stdout, err = p.communicate(timeout=120)
    if p.returncode != 0:
        raise RuntimeError("BCC baseline failed: " + err.strip()[-500:])
    res = json.loads(stdout.strip().splitlines()[-1])
    return {"written": res["written"], "produced": res["produced"], "lost": res["lost"],
            "load_seconds": info["seconds"], "load_calls": info["calls"],
            "events_per_s": res["written"] / info["seconds"]}


def fresh_start() -> None:
    """Before each contender: write back the dirty pages earlier runs left, so that no
    contender pays for another's writeback (the kernel throttles a writer once dirty pages
    pass its limits, and on this VM a few seconds of the pipeline's output get close)."""
    os.sync()


def run_e2e(seconds: float, rounds: int, with_bcc: bool = True, warm: bool = True,
            progress: Progress | None = None) -> dict[str, Any]:
    """Every contender once a round, in the same order each round, so that drift in the
    machine's speed hits all of them alike; every round of each is kept."""
    result: dict[str, Any] = {"load_seconds": seconds, "warm": warm, "skipped": {}}
    contenders: list[tuple[str, Callable[[Path, float, bool], dict[str, Any]]]] = [
        ("c_drain", run_c_drain), ("pipeline", run_pipeline)]
    why = bcc_missing() if with_bcc else "left out with --no-bcc"
    if why is None:
        contenders.append(("bcc", run_bcc))
    else:
        result["skipped"]["bcc"] = why
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in contenders}
    if progress:
        progress.start("e2e", rounds)
    for _ in range(rounds):
        for name, run in contenders:
            if progress:
                progress.note(name)
            # each in its own directory, removed after: its output's pages go with it
            with tempfile.TemporaryDirectory(prefix="ap-bench-") as d:
                fresh_start()
                runs[name].append(run(Path(d), seconds, warm))
        if progress:
            progress.tick()
    result["rounds"] = runs
    return result
