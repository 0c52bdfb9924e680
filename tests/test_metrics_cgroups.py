"""The cgroup table's counters on a real run's metrics endpoint: a process in a cgroup the
test makes creates files; its id is looked up once, found, and held in the table; the
scrape after the run equals the final statistics' `cgroups` object."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from conftest import StartPipeline, needs_root
from helpers.cgroup_dirs import cg_base, needs_cgroup2
from helpers.creator import CREATOR, new_comm
from test_metrics import by_name, final_line, free_port, scrape, val, wait_for

pytestmark = [needs_root, needs_cgroup2]
__all__ = ["cg_base"]  # the fixture, used by name


def test_cgroup_counters_are_scraped(pipeline_proc: StartPipeline, pin_root: Path,
                                     tmp_path: Path, cg_base: Path) -> None:
    comm, port, n = new_comm("apc"), free_port(), 3
    work, out = tmp_path / "work", tmp_path / "ev.jsonl"
    work.mkdir()
    cg = cg_base / "m"
    cg.mkdir()
    pl = pipeline_proc("--trigger", "tracepoint", "--filter-comm", comm, "--sink", "jsonl",
                       "--output", str(out), "--pin-dir", str(pin_root),
                       "--metrics", f"127.0.0.1:{port}", "--metrics-linger", "60")
    first = scrape(port)
    mode = by_name(first, "cgroup_resolve_mode")
    assert list(mode.values()) == [1]
    assert set(by_name(first, "cgroup_lookups_total")) == {
        frozenset({"result": r}.items()) for r in ("found", "gone", "unverified")}
    found0 = val(first, "cgroup_lookups_total", result="found")
    entries0 = val(first, "cgroup_table_entries")
    # the creator moves itself into the new cgroup, then creates n files
    subprocess.run(["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(cg),
                    "/usr/bin/python3", "-c", CREATOR, comm, str(work), "c", str(n)], check=True)
    wait_for(lambda: out.exists() and len(out.read_bytes().splitlines()) == n, 30,
             f"{n} events")
    evs = [json.loads(ln) for ln in out.read_bytes().splitlines()]
    assert {e["cgroup_id"] for e in evs} == {cg.stat().st_ino}
    assert {e["cgroup"] for e in evs} == {"/" + cg.relative_to(cg_base.parent).as_posix()}
    running = scrape(port)
    # one id, new to the table: looked up once and found, whatever resolved before
    assert val(running, "cgroup_lookups_total", result="found") == found0 + 1
    assert val(running, "cgroup_table_entries") == entries0 + 1
    pl.proc.send_signal(signal.SIGINT)
    final = final_line(pl)["cgroups"]
    after = scrape(port)  # the run lingers, serving its final statistics
    assert by_name(after, "cgroup_resolve_mode") == {frozenset({"mode": final["mode"]}.items()): 1}
    assert {dict(k)["result"]: v for k, v in by_name(after, "cgroup_lookups_total").items()} == {
        r: final[r] for r in ("found", "gone", "unverified")}
    assert sum(by_name(after, "cgroup_lookups_total").values()) == final["lookups"]
    assert val(after, "cgroup_walks_total") == final["walks"]
    assert val(after, "cgroup_table_entries") == final["table"]
    assert val(after, "cgroup_table_evictions_total") == final["evicted"]
    pl.proc.send_signal(signal.SIGINT)  # ends the linger
    assert pl.wait() == 0, pl.stderr()
