"""The reader's naps (reader.py, evq.h "Doorbell"): between the drains of a trickle the
reader waits nap_us on a timer and on the doorbell, which producers ring only once the
queue holds the nap threshold (a batch, or half the queue). Through the real kernel
producers and the real pipeline: an event that rings nothing is still read when the nap
ends, and a burst into a small queue during a long nap rings the reader in time to lose
nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import Reap, StartPipeline, needs_root, read_jsonl, wait_for

from pipeline.bench.tools import program

pytestmark = needs_root

# The longest nap the configuration allows: a nap the test does not end stays visible.
LONG_NAP_US = "1000000"

STATS = "pipeline: stats "

# For each line on stdin, creates the next file and says its name.
STEPS = r"""
import os, sys
d = sys.argv[1]
fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
for name in ("first", "second"):
    sys.stdin.readline()
    os.close(os.open(name, os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=fd))
    print(name, flush=True)
"""


def test_an_event_that_rings_nothing_is_read_when_the_nap_ends(
        tmp_path: Path, pin_root: Path, pipeline_proc: StartPipeline, reap: Reap) -> None:
    work = tmp_path / "files"
    work.mkdir()
    out = tmp_path / "events.jsonl"
    creator = reap(subprocess.Popen([sys.executable, "-c", STEPS, str(work)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    pl = pipeline_proc("--sink", "jsonl", "--output", str(out), "--trigger", "tracepoint",
                       "--filter-pid", str(creator.pid), "--nap-us", LONG_NAP_US,
                       "--stats", "0.1", "--pin-dir", str(pin_root))

    def reader_slept() -> bool:
        return any(json.loads(ln[len(STATS):])["sleeps"] >= 1
                   for ln in list(pl.lines) if ln.startswith(STATS))

    def names() -> list[str]:
        return [str(e["name"]) for e in read_jsonl(out)] if out.exists() else []

    def step() -> str:
        assert creator.stdin is not None and creator.stdout is not None
        creator.stdin.write("go\n")
        creator.stdin.flush()
        return creator.stdout.readline().strip()

    # The first event finds the reader asleep and rings; the reader drains that one event
    # (a short batch that emptied the queue) and naps a second, asking for a ring only
    # once the queue holds thousands of events.
    wait_for(reader_slept, 30, "the idle reader to sleep on the doorbell")
    assert step() == "first"
    wait_for(lambda: names() == ["first"], 30, "the first event")
    # The second comes during that nap: it rings nothing, and the nap's timer reads it.
    assert step() == "second"
    wait_for(lambda: names() == ["first", "second"], 30, "the second event")
    assert creator.wait(30) == 0
    assert pl.stop() == 0, pl.stderr()
    final = pl.final()
    assert final["produced"] == final["read"] == 2
    # one ring, the first event's: the second was read without one
    assert final["wakeups"] == 1
    assert final["naps"] >= 1
    assert final["dropped"] == {"kernel_queue_full": 0, "kernel_queue_busy": 0}


def test_a_burst_during_a_long_nap_rings_the_reader_and_loses_nothing(
        tmp_path: Path, pin_root: Path, pipeline_proc: StartPipeline, reap: Reap) -> None:
    # createload makes a file every few microseconds: one second's nap would see hundreds
    # of thousands of events, far more than the queue's 4,096 slots. The producers ring
    # once 2,048 are waiting (half the queue), so the reader drains long before it fills.
    files, capacity = 30_000, 4096
    shm = Path("/dev/shm") / f"ap-test-naps-{os.getpid()}"
    shm.mkdir()
    go = tmp_path / "go"
    out = tmp_path / "events.jsonl"
    try:
        load = reap(subprocess.Popen([str(program("createload")), "--dir", str(shm),
                                      "--files", str(files), "--start-file", str(go)],
                                     stdout=subprocess.PIPE, text=True))
        pl = pipeline_proc("--sink", "jsonl", "--output", str(out), "--trigger", "tracepoint",
                           "--filter-pid", str(load.pid), "--queue-capacity", str(capacity),
                           "--nap-us", LONG_NAP_US, "--pin-dir", str(pin_root))
        go.touch()
        stdout, _ = load.communicate(timeout=120)
        assert load.returncode == 0
        assert json.loads(stdout)["created"] == files
        wait_for(lambda: out.exists() and sum(1 for _ in out.open("rb")) >= files, 60,
                 "every event in the file")
        assert pl.stop() == 0, pl.stderr()
    finally:
        for p in shm.iterdir():
            p.unlink()
        shm.rmdir()
    final = pl.final()
    assert final["dropped"] == {"kernel_queue_full": 0, "kernel_queue_busy": 0}
    assert final["produced"] == final["read"] == final["sinks"]["jsonl"]["delivered"] == files
    names = [str(e["name"]) for e in read_jsonl(out)]
    assert names == [f"f{i}" for i in range(files)]
    assert final["queue_high_water"] <= capacity
    assert final["naps"] >= 1
