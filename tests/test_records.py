"""What each record says about the task that made it: pid, tid, ppid, uid and comm are read
in the kernel through the task's BTF pointer (bpf/event_fill.bpf.h), and the benchmark's load
program hooks the raw sys_enter tracepoint filtered on getppid's number."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from conftest import Reap, StartPipeline, needs_root, read_jsonl, wait_for

pytestmark = needs_root

NOBODY = 65534

CALLER = r"""
import os, sys
sys.stdin.readline()
for _ in range(int(sys.argv[1])):
    os.getppid()
"""


def test_fallback_record_names_the_creating_task(tmp_path: Path, pin_root: Path,
                                                 pipeline_proc: StartPipeline,
                                                 reap: Reap) -> None:
    # pytest's own tmp tree is 0700: the unprivileged creator needs a place of its own
    shared = Path(tempfile.mkdtemp(prefix="ap-records-", dir="/tmp"))
    try:
        _fallback_record(shared, tmp_path, pin_root, pipeline_proc, reap)
    finally:
        shutil.rmtree(shared)


def _fallback_record(shared: Path, tmp_path: Path, pin_root: Path,
                     pipeline_proc: StartPipeline, reap: Reap) -> None:
    shared.chmod(0o755)
    work = shared / "w"
    work.mkdir()
    work.chmod(0o777)
    # comm is the executable's name: a copy of touch under a name of our own
    tool = shared / "ap-comm-check"
    shutil.copy("/usr/bin/touch", tool)
    tool.chmod(0o755)
    out = tmp_path / "rec.jsonl"
    pl = pipeline_proc("--sink", "jsonl", "--output", str(out), "--filter-comm", tool.name,
                       "--pin-dir", str(pin_root), "--trigger", "tracepoint")
    child = reap(subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                                   "--clear-groups", str(tool), str(work / "made-by-nobody")]))
    assert child.wait(10) == 0
    wait_for(lambda: out.exists() and len(read_jsonl(out)) >= 1, 5, "the event")
    assert pl.stop() == 0
    (ev,) = read_jsonl(out)
    assert ev["name"] == str(work / "made-by-nobody")
    # setpriv execs the tool: same process, whose parent is this test
    assert ev["pid"] == ev["tid"] == child.pid
    assert ev["ppid"] == os.getpid()
    assert ev["uid"] == NOBODY
    assert ev["comm"] == tool.name
    assert ev["trigger"] == "tracepoint" and ev["syscall"] in ("openat", "open", "creat")


def test_benchmark_load_one_event_per_getppid(tmp_path: Path, pin_root: Path,
                                              pipeline_proc: StartPipeline, reap: Reap) -> None:
    calls = 5000
    out = tmp_path / "bench.jsonl"
    child = reap(subprocess.Popen([sys.executable, "-c", CALLER, str(calls)],
                                  stdin=subprocess.PIPE, text=True))
    comm = Path(f"/proc/{child.pid}/comm").read_text().strip()
    pl = pipeline_proc("--sink", "jsonl", "--output", str(out), "--trigger", "getppid",
                       "--filter-pid", str(child.pid), "--pin-dir", str(pin_root))
    assert child.stdin is not None
    child.stdin.write("go\n")
    child.stdin.close()
    assert child.wait(20) == 0
    wait_for(lambda: out.exists() and len(read_jsonl(out)) >= calls, 10, "the getppid events")
    assert pl.stop() == 0
    final = pl.final()
    events = read_jsonl(out)
    # the interpreter may call getppid itself while starting: count at least ours, exactly
    # what the kernel produced, nothing dropped
    assert len(events) == final["produced"] == final["read"] >= calls
    assert sum(final["dropped"].values()) == 0
    assert {(e["pid"], e["tid"], e["ppid"], e["uid"], e["comm"]) for e in events} == {
        (child.pid, child.pid, os.getpid(), 0, comm)}
    assert {(e["trigger"], e["syscall"], e["name"]) for e in events} == {
        ("bench", "getppid", "getppid")}
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
