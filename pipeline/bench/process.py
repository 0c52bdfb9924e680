"""Whole-process measurements of the pipeline: start-up time and idle CPU."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _start(extra: list[str]) -> tuple[subprocess.Popen[bytes], float]:
    t0 = time.monotonic()
    p = subprocess.Popen([sys.executable, "-m", "pipeline", "--sink", "stdout", *extra],
                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert p.stderr is not None
    for raw in p.stderr:
        if b"ready in" in raw:
            return p, time.monotonic() - t0
    p.wait()
    raise RuntimeError("the pipeline exited before it was ready")


def _stop(p: subprocess.Popen[bytes]) -> None:
    p.send_signal(signal.SIGINT)
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


def run_startup(rounds: int = 3) -> dict[str, Any]:
    times = []
    for _ in range(rounds):
        p, t = _start([])
        times.append(t)
        _stop(p)
    return {"seconds_median": statistics.median(times), "seconds": times,
            "what": "launch of `python -m pipeline` until it prints ready (attached, enabled)"}


def run_idle(seconds: float = 5.0, settle: float = 1.0) -> dict[str, Any]:
    # a comm nothing has, so other activity on the machine creates no events
    p, _ = _start(["--filter-comm", "ap-idle-probe"])
    try:
        time.sleep(settle)  # let start-up work finish
        c0, t0 = _cpu_seconds(p.pid), time.monotonic()
        time.sleep(seconds)
        c1, t1 = _cpu_seconds(p.pid), time.monotonic()
    finally:
        _stop(p)
    return {"core_percent": 100.0 * (c1 - c0) / (t1 - t0), "seconds": t1 - t0}


def run_latency(events: int = 20, gap: float = 0.1) -> dict[str, Any]:
    """Low-rate latency: time from just before a file is created until its
    line is in the jsonl sink's file (so through the doorbell, the sleeping
    reader, formatting and the write)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ap-latency-") as d:
        out = Path(d) / "lat.jsonl"
        work = Path(d) / "w"
        work.mkdir()
        p = subprocess.Popen([sys.executable, "-m", "pipeline", "--sink", "jsonl", "--output",
                              str(out), "--pin-dir", "/sys/fs/bpf/arena-pipeline-bench"],
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert p.stderr is not None
        for raw in p.stderr:
            if b"ready in" in raw:
                break
        lat: list[float] = []
        try:
            for i in range(events):
                time.sleep(gap)  # long enough for the reader to go back to sleep
                size = out.stat().st_size if out.exists() else 0
                t0 = time.monotonic()
                (work / f"lat-{i}").touch()
                while (out.stat().st_size if out.exists() else 0) == size:
                    time.sleep(0.0002)
                lat.append(time.monotonic() - t0)
        finally:
            _stop(p)
    return {"ms_median": 1000 * statistics.median(lat), "ms_max": 1000 * max(lat),
            "events": events, "ms": [1000 * x for x in lat]}
