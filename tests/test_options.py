"""Kernel-side filters, --max-events, --duration and config files, end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import Reap, StartPipeline, needs_root, read_jsonl, wait_for

pytestmark = needs_root

MAKE = r"""
import os, sys
for i in range(int(sys.argv[3])):
    os.close(os.open(f"{sys.argv[1]}/{sys.argv[2]}-{i}", os.O_CREAT | os.O_WRONLY, 0o600))
print(os.getpid())
"""


def make_files(work: Path, tag: str, n: int) -> int:
    res = subprocess.run([sys.executable, "-c", MAKE, str(work), tag, str(n)], check=True,
                         capture_output=True, text=True)
    return int(res.stdout)


def test_filter_comm_and_pid_apply_in_the_kernel(tmp_path: Path, pin_root: Path,
                                                 pipeline_proc: StartPipeline) -> None:
    work = tmp_path / "w"
    work.mkdir()
    out = tmp_path / "comm.jsonl"
    pl = pipeline_proc("--sink", "jsonl", "--output", str(out), "--filter-comm", "touch",
                       "--pin-dir", str(pin_root), "--trigger", "tracepoint")
    make_files(work, "py", 50)  # comm python: filtered out
    subprocess.run(["touch", str(work / "by-touch")], check=True)
    wait_for(lambda: out.exists() and len(read_jsonl(out)) >= 1, 5, "the touch event")
    assert pl.stop() == 0
    final = pl.final()
    names = [e["name"] for e in read_jsonl(out)]
    assert str(work / "by-touch") in names
    assert all(e["comm"] == "touch" for e in read_jsonl(out))
    # filtered events are never produced: no sequence number, no drop
    assert final["produced"] == final["read"] == len(names)


def test_filter_pid(tmp_path: Path, pin_root: Path, pipeline_proc: StartPipeline,
                    reap: Reap) -> None:
    work = tmp_path / "w"
    work.mkdir()
    out = tmp_path / "pid.jsonl"
    # a shell that waits for a line on stdin, then creates 20 files
    sh = reap(subprocess.Popen(
        ["bash", "-c", f"read x; for i in $(seq 20); do : > {work}/s-$i; done"],
        stdin=subprocess.PIPE, text=True))
    pl = pipeline_proc("--sink", "jsonl", "--output", str(out), "--filter-pid", str(sh.pid),
                       "--pin-dir", str(pin_root), "--trigger", "tracepoint")
    make_files(work, "other", 30)
    assert sh.stdin is not None
    sh.stdin.write("go\n")
    sh.stdin.close()
    assert sh.wait(10) == 0
    wait_for(lambda: out.exists() and len(read_jsonl(out)) >= 20, 5, "the shell's events")
    assert pl.stop() == 0
    events = read_jsonl(out)
    assert len(events) == 20 and {e["pid"] for e in events} == {sh.pid}


def test_max_events_stops_with_exact_count(tmp_path: Path, pin_root: Path,
                                           pipeline_proc: StartPipeline) -> None:
    work = tmp_path / "w"
    work.mkdir()
    out = tmp_path / "max.jsonl"
    pl = pipeline_proc("--sink", "jsonl", "--output", str(out), "--max-events", "100",
                       "--pin-dir", str(pin_root), "--trigger", "tracepoint")
    make_files(work, "m", 300)
    assert pl.wait(20) == 0
    final = pl.final()
    assert final["read"] == 100 == len(read_jsonl(out))
    assert final["produced"] == 100 + sum(final["dropped"].values())


def test_duration_and_config_file(tmp_path: Path, pin_root: Path,
                                  pipeline_proc: StartPipeline) -> None:
    out = tmp_path / "cfg.jsonl"
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'sinks = ["jsonl"]\nduration = 0.5\npin_dir = "{pin_root}"\n'
                   f'[sink.jsonl]\noutput = "{out}"\n')
    pl = pipeline_proc("--config", str(cfg))
    assert pl.wait(20) == 0
    assert out.exists() and pl.final()["sinks"]["jsonl"]["failed"] is None
    # a flag overrides the file
    pl2 = pipeline_proc("--config", str(cfg), "--duration", "0.2", "--sink", "stdout")
    assert pl2.wait(20) == 0
    assert "stdout" in pl2.final()["sinks"] and "jsonl" not in pl2.final()["sinks"]
