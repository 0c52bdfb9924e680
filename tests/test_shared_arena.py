"""One arena for the event queue and the data structures.

The capture session's arena holds the queue and, beside it, the data-structure space
(allocator, epochs, directory of instances). The session's own process reaches the space
through Arena.of_session (no second mapping), other processes through the run's pins: the
reader (here a sink plugin loaded through a real entry point), kernel programs and pool
workers all work on the same memory while the tracepoints produce events into it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from array import array
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    PipelineProc,
    StartPipeline,
    assert_one_line,
    needs_root,
    parse_jsonl,
    remove_tree,
    run_pipeline,
)

pytestmark = needs_root

HELPERS = Path(__file__).resolve().parent / "helpers"
COMM = "apshared"

# Creates files from a process whose comm is COMM, so that --filter-comm keeps exactly them.
_CREATOR = rf"""
import os, sys
with open("/proc/self/comm", "w") as f:
    f.write("{COMM}")
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
for i in range(int(sys.argv[3])):
    os.close(os.open(f"{{sys.argv[2]}}-{{i:06d}}", os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=fd))
"""


def _creator(work: Path, tag: str, n: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", _CREATOR, str(work), tag, str(n)])


def _plugin_env(tmp_path: Path) -> dict[str, str]:
    """The helper sink installed as a third party would: a module and a dist-info with an
    entry point in the arena_pipeline.sinks group, on the run's PYTHONPATH."""
    site = tmp_path / "site"
    dist = site / "arena_sink_test-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: arena-sink-test\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[arena_pipeline.sinks]\n"
                                           "arenatest = arena_sink:ArenaSink\n")
    shutil.copy(HELPERS / "arena_sink.py", site / "arena_sink.py")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH")) if p)
    return env


def _start(pipeline_proc: StartPipeline, tmp_path: Path, pin_root: Path,
           pool_instance: str = "") -> tuple[PipelineProc, Path]:
    summary = tmp_path / "summary.json"
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'sinks = ["arenatest"]\n[sink.arenatest]\noutput = "{summary}"\n'
                   f'pool_instance = "{pool_instance}"\n')
    pl = pipeline_proc("--config", str(cfg), "--trigger", "tracepoint", "--filter-comm", COMM,
                       "--queue-capacity", "4096", "--arena-pages", "8192",
                       "--pin-dir", str(pin_root), env=_plugin_env(tmp_path))
    return pl, summary


def _check_accounting(final: dict[str, Any]) -> None:
    """The run's arena figures cover the queue and the space, and add up."""
    arena = final["arena"]
    # the NULL guard page, the root and the slots, then the space to the end
    assert arena["pages"] == 8192 == 1 + arena["queue_pages"] + arena["ds_pages"]
    assert arena["ds_pages_in_use"] > 0 and arena["ds_failures"] == 0
    # every queue page and every heap page in use is backed, and counted
    assert final["arena_resident_bytes"] >= 4096 * (arena["queue_pages"]
                                                    + arena["ds_pages_in_use"])


def test_session_and_structures_share_one_mapping() -> None:
    from pipeline import _core
    from pipeline.ds import Arena

    s = _core.Session(arena_pages=4096, queue_capacity=1024)
    try:
        a = Arena.of_session(s)
        st, info = s.stats(), a.info()
        assert info["session"] and not info["owner"] and info["pages"] == 4096
        assert info["creator_pid"] == os.getpid()
        # guard page, root and slots, then the space over every page left
        assert info["space_first_page"] == 1 + st["arena_queue_pages"]
        assert info["space_pages"] == st["arena_ds_pages"] == 4096 - info["space_first_page"]
        h = a.create("hash", 0, "h")
        s.enable(True)
        keys = array("Q", range(1, 2001))
        assert h.insert_many(keys, array("Q", (3 * k for k in keys))).ok == 2000
        assert s.burst(700, 100) == (700, 0)
        # the session's own ds_run_hash program, on the same memory
        assert h.run_kernel(2000, search=1, key_lo=1, key_span=2000, seq=True).succeeded == \
            [0, 0, 2000, 0]
        assert a.kernel_totals() == {"kernel_ops": 2000, "kernel_fails": 0, "kernel_batches": 1}
        data, n = s.drain_json(1000)
        assert n == 700 and [e["seq"] for e in parse_jsonl(data)] == list(range(700))
        assert sorted(h.items()) == [(k, 3 * k) for k in keys]
        heap = a.heap_stats()
        assert heap["pages_in_use"] > 0
        assert s.stats()["arena_resident_bytes"] >= 4096 * (st["arena_queue_pages"]
                                                            + heap["pages_in_use"])
        with pytest.raises(_core.CoreError, match="already has an arena"):
            Arena(4096)
        with pytest.raises(_core.CoreError, match="pinned by the session"):
            a.pin("/sys/fs/bpf/nowhere")
    finally:
        s.close()
    with pytest.raises(ValueError, match="session was closed"):
        h.search_many([1])
    a.close()
    # the session and its binding gone, the address is free for an arena of its own
    Arena(4096).close()


def test_a_standalone_arena_keeps_a_session_out() -> None:
    from pipeline import _core
    from pipeline.ds import Arena

    with Arena(4096), pytest.raises(_core.CoreError, match="one arena per process"):
        _core.Session(arena_pages=4096, queue_capacity=1024)


def test_reader_works_in_the_arena_while_the_kernel_produces(
        pipeline_proc: StartPipeline, tmp_path: Path, pin_root: Path) -> None:
    pl, summary = _start(pipeline_proc, tmp_path, pin_root)
    work = tmp_path / "work"
    work.mkdir()
    pids = []
    for r in range(3):
        c = _creator(work, f"r{r}", 500)
        assert c.wait(60) == 0
        pids.append(c.pid)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and pl.proc.poll() is None:
        time.sleep(0.2)
        if len(list(work.iterdir())) == 1500:
            break
    assert pl.stop() == 0, pl.stderr()
    final = pl.final()
    assert final["produced"] == final["read"] == 1500, final
    got = json.loads(summary.read_text())
    assert got["events"] == got["inserted"] == got["found"] == 1500
    assert got["value_mismatches"] == 0
    # every event's (seq + 1 -> pid), in the reader's hash: the creators ran one by one
    assert sorted(map(tuple, got["seen"])) == [(i + 1, pids[i // 500]) for i in range(1500)]
    assert got["info"]["session"] and got["info"]["creator_pid"] == pl.proc.pid
    _check_accounting(final)


def test_pool_workers_attached_through_the_pins(
        pipeline_proc: StartPipeline, tmp_path: Path, pin_root: Path) -> None:
    from pipeline.ds import Arena
    from pipeline.pool import KeyedTask, Pool, keyed_user

    pl, summary = _start(pipeline_proc, tmp_path, pin_root, pool_instance="pool")
    run_dir = str(pin_root / str(pl.proc.pid))
    work = tmp_path / "work"
    work.mkdir()
    creator = _creator(work, "p", 2000)  # events flow while the workers insert
    with Pool.for_run(run_dir, 2) as pool:
        pool.warm(2)
        tasks = [KeyedTask("pool", 1 + 5000 * i, 5001 + 5000 * i, (1, 0, 0), 256,
                           time.time() + 120, 4096, i + 1) for i in range(2)]
        results = [f.result(120) for f in [pool.submit(keyed_user, t) for t in tasks]]
    assert creator.wait(60) == 0
    want: set[int] = set()
    for r in results:
        assert r.mismatches == 0 and r.ops == 4096 and r.ok[0] > 0
        keys = array("Q")
        keys.frombytes(r.keys)
        want |= set(keys)
    # and the kernel, through the pinned ds_run_hash, from a third process
    a = Arena.attach(run_dir)
    try:
        assert a.info()["creator_pid"] == pl.proc.pid and not a.info()["session"]
        kb = a.lookup("pool").run_kernel(1000, insert=1, key_lo=20001, key_span=1000, seq=True,
                                         val_base=20001)
        assert kb.succeeded == [1000, 0, 0, 0]
    finally:
        a.close()
    want |= set(range(20001, 21001))
    assert pl.stop() == 0, pl.stderr()
    final = pl.final()
    assert final["produced"] == final["read"] == 2000, final
    # what the pipeline's own process finds in the structure, exactly
    got = json.loads(summary.read_text())
    assert sorted(map(tuple, got["others"]["pool"])) == [(k, k) for k in sorted(want)]
    assert got["events"] == got["found"] == 2000
    _check_accounting(final)


def test_a_queue_that_leaves_the_space_too_few_pages_is_refused(pin_root: Path) -> None:
    from pipeline import _core

    # the queue (and the filter tables after its slots) alone fit; the space's header and
    # working pages (25) do not
    line = assert_one_line(run_pipeline("--trigger", "none", "--arena-pages", "64",
                                        "--queue-capacity", "256", "--pin-dir", str(pin_root)),
                           "too small", "data-structure space",
                           "raise --arena-pages or lower --queue-capacity")
    slot_pages = -(-256 * (_core.EVENT_SIZE + 8) // 4096)
    m = re.search(r"needs (\d+)", line)
    assert m and int(m.group(1)) == 2 + slot_pages + _core.FILTER_PAGES + 25, line
    # exactly that many pages: the run starts, and stops as asked
    res = run_pipeline("--trigger", "none", "--arena-pages", m.group(1), "--queue-capacity",
                       "256", "--duration", "0.2", "--pin-dir", str(pin_root))
    assert res.returncode == 0, res.stderr
    arena = json.loads(res.stderr.split("pipeline: final ", 1)[1])["arena"]
    assert (arena["pages"], arena["ds_pages"]) == (int(m.group(1)), 25)


def test_pool_refuses_a_run_directory_a_user_planted() -> None:
    from pipeline.errors import ConfigError
    from pipeline.pool import Pool

    # /sys/fs/bpf is sticky and world-writable: user nobody makes a look-alike of a run
    # directory, named by a live pid, with "arena" a link to a file of root's
    planted = Path(f"/sys/fs/bpf/ap-test-planted-{os.getpid()}-{time.monotonic_ns()}")
    run = planted / str(os.getpid())
    try:
        for cmd in (["mkdir", "-m", "0755", str(planted)], ["mkdir", "-m", "0700", str(run)],
                    ["ln", "-s", "/etc/shadow", str(run / "arena")]):
            subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd],
                           check=True, env={"PATH": os.environ["PATH"]})
        with pytest.raises(ConfigError, match="owned by uid 65534, not root"):
            Pool.for_run(str(run), 1)
        assert os.readlink(run / "arena") == "/etc/shadow"  # left as it was
    finally:
        remove_tree(planted)
