"""End to end through the real kernel: file creations and bursts, through the
arena queue, to a JSONL file; exact counts."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from conftest import Reap, StartPipeline, needs_root, read_jsonl, run_pin_names, wait_for

pytestmark = needs_root

CREATOR = r"""
import os, sys
d, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
for i in range(n):
    os.close(os.open(f"{tag}-{i:06d}", os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=fd))
print(os.getpid())
"""


def test_files_from_several_processes_arrive_exactly_once_in_order(
        tmp_path: Path, pin_root: Path, pipeline_proc: StartPipeline, reap: Reap) -> None:
    procs, per_proc = 4, 2500  # N = 10,000
    out = tmp_path / "events.jsonl"
    work = tmp_path / "files"
    work.mkdir()
    pl = pipeline_proc("--sink", "jsonl", "--output", str(out), "--trigger", "tracepoint",
                       "--pin-dir", str(pin_root))
    creators = [reap(subprocess.Popen([sys.executable, "-c", CREATOR, str(work), f"p{k}",
                                       str(per_proc)], stdout=subprocess.PIPE, text=True))
                for k in range(procs)]
    pids = {}
    for k, c in enumerate(creators):
        stdout, _ = c.communicate(timeout=120)
        assert c.returncode == 0
        pids[int(stdout.strip())] = f"p{k}"

    def ours() -> list[dict[str, object]]:
        return [e for e in read_jsonl(out) if e["pid"] in pids] if out.exists() else []

    wait_for(lambda: len(ours()) >= procs * per_proc, 30, "all events in the file")
    assert pl.stop() == 0, pl.stderr()
    final = pl.final()
    events = ours()
    assert len(events) == procs * per_proc
    seen: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for e in events:
        name = str(e["name"])
        tag, idx = name.split("-")
        assert tag == pids[int(str(e["pid"]))], e  # the name belongs to its creator
        assert e["syscall"] == "openat" and e["trigger"] == "tracepoint"
        seen[int(str(e["pid"]))].append((int(idx), int(str(e["seq"]))))
    for pid, items in seen.items():
        idxs = [i for i, _ in items]
        assert idxs == list(range(per_proc)), f"pid {pid}: lost, duplicated or reordered"
        seqs = [s for _, s in items]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert final["dropped"] == {"kernel_queue_full": 0, "kernel_queue_busy": 0}
    assert final["sinks"]["jsonl"]["delivered"] == final["read"]
    assert final["produced"] == final["read"]


def test_kernel_burst_of_a_million_is_accounted_exactly(tmp_path: Path, pin_root: Path,
                                                        pipeline_proc: StartPipeline) -> None:
    out = tmp_path / "burst.jsonl"
    pl = pipeline_proc("--sink", "jsonl", "--output", str(out), "--trigger", "none",
                       "--pin-dir", str(pin_root))
    burst = subprocess.run(
        [sys.executable, "-m", "pipeline", "burst", "--events", "1000000",
         "--pin-dir", str(pin_root / str(pl.proc.pid))],
        cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=120)
    assert burst.returncode == 0, burst.stderr
    assert pl.stop() == 0, pl.stderr()
    final = pl.final()
    dropped = final["dropped"]["kernel_queue_full"] + final["dropped"]["kernel_queue_busy"]
    assert final["produced"] == 1_000_000
    assert final["produced"] == final["read"] + dropped
    events = read_jsonl(out)
    assert len(events) == final["read"] == final["sinks"]["jsonl"]["delivered"]
    seqs = [int(e["seq"]) for e in events]
    assert len(set(seqs)) == len(seqs) and max(seqs) < 1_000_000
    assert all(e["trigger"] == "burst" and e["name"] == "burst" for e in events)


def test_touch_gives_one_event_promptly(tmp_path: Path, pin_root: Path,
                                        pipeline_proc: StartPipeline) -> None:
    out = tmp_path / "one.jsonl"
    target = tmp_path / "x"
    pl = pipeline_proc("--sink", "jsonl", "--output", str(out), "--pin-dir", str(pin_root))
    touch = subprocess.run(["touch", str(target)], check=True)
    assert touch.returncode == 0
    wait_for(lambda: out.exists() and any(e["name"] == str(target) for e in read_jsonl(out)),
             5, "the touch event")
    assert pl.stop() == 0
    mine = [e for e in read_jsonl(out) if e["name"] == str(target)]
    assert len(mine) == 1 and mine[0]["comm"] == "touch"


def test_pins_private_removed_on_exit_and_stale_ones_cleaned(tmp_path: Path, pin_root: Path,
                                                             pipeline_proc: StartPipeline) -> None:
    out = tmp_path / "p.jsonl"
    first = pipeline_proc("--sink", "jsonl", "--output", str(out), "--pin-dir", str(pin_root))
    pins = pin_root / str(first.proc.pid)
    assert {p.name for p in pins.iterdir()} == run_pin_names()
    assert pin_root.stat().st_mode & 0o777 == 0o700
    assert out.stat().st_mode & 0o777 == 0o600
    first.proc.kill()  # SIGKILL: no chance to clean up
    first.wait()
    assert pins.exists()
    second = pipeline_proc("--sink", "jsonl", "--output", str(out), "--pin-dir", str(pin_root))
    assert not pins.exists()
    assert any("removed stale pins" in ln and str(first.proc.pid) in ln for ln in second.lines)
    assert second.stop() == 0
    assert not (pin_root / str(second.proc.pid)).exists()
