"""Kernel agents in a recorded stress run (real BPF batches, real worker processes): the
kernel's ds_run_NAME batches write one history record per operation into the arena, on
the same keys and the same queue as the user workers, and the merged history passes the
linearizability checker. Counts are exact: a kernel thread's records equal its operations,
and every record of a kernel agent carries its agent id. Nothing here asserts a time."""

from __future__ import annotations

import itertools
import json
import struct
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from test_stress import needs_root, stress

from pipeline.ds import Arena, Op, Result

pytestmark = needs_root
REC = struct.Struct("<QQQQIBBH")
KERNEL = 0x80000000
DRIVER = 0x7FFFFFFF


def _run(*args: str, hist: Path) -> tuple[dict[str, Any], list[tuple[int, ...]]]:
    res = stress(*args, "--check-linearizability", "-v", "--history", str(hist),
                 "--format", "json")
    assert res.returncode == 0, res.stdout + res.stderr
    r: dict[str, Any] = json.loads(res.stdout)
    raw = hist.read_bytes()
    assert len(raw) % REC.size == 0
    recs = [REC.unpack_from(raw, i) for i in range(0, len(raw), REC.size)]
    assert r["linearizability"]["ok"] is True, r["linearizability"]
    assert r["linearizability"]["records"] == len(recs)
    assert all(r["checks"]["invariants"].values()), r["checks"]
    assert all(x[0] <= x[1] for x in recs)
    return r, recs


def _by_agent(recs: list[tuple[int, ...]]) -> Counter[int]:
    return Counter(x[4] for x in recs)


def test_hash_kernel_and_user_agents_share_keys(tmp_path: Path) -> None:
    keys = 64  # few keys: the kernel and the users meet on every one of them
    ops = 100_000
    r, recs = _run("hash", "-t", "2", "-k", "2", "-o", str(ops), "--keys", str(keys),
                   "--batch", "256", "--prefill", "0.5", hist=tmp_path / "h.bin")
    per = _by_agent(recs)
    kern = r["per_kernel_thread"]
    assert [k["history_records"] for k in kern] == [per[KERNEL | 0], per[KERNEL | 1]]
    assert [k["ops"] for k in kern] == [per[KERNEL | 0], per[KERNEL | 1]]
    assert r["kernel"]["ops"] == per[KERNEL | 0] + per[KERNEL | 1] > 0
    assert per[0] == per[256] == ops  # worker * 256 + thread
    assert per[DRIVER] == keys // 2     # the prefill
    assert sum(per.values()) == len(recs)
    kernel_recs = [x for x in recs if x[4] & KERNEL and x[4] != DRIVER]
    # the kernel worked on the users' keys, and changed some of them
    assert {x[2] for x in kernel_recs} <= set(range(1, keys + 1))
    changed = {x[2] for x in kernel_recs if x[6] == Result.OK and x[5] in (Op.INSERT, Op.DELETE)}
    users_changed = {x[2] for x in recs if x[4] in (0, 256) and x[6] == Result.OK
                     and x[5] in (Op.INSERT, Op.DELETE)}
    assert changed & users_changed
    # and at the same time: the kernel's records and the users' overlap in time
    users = [x for x in recs if x[4] in (0, 256)]
    assert max(min(x[0] for x in kernel_recs), min(x[0] for x in users)) < \
        min(max(x[1] for x in kernel_recs), max(x[1] for x in users))
    # values equal keys on both sides: inserted, found and deleted
    assert all(x[3] == x[2] for x in kernel_recs
               if x[5] == Op.INSERT or (x[6] == Result.OK and x[5] in (Op.SEARCH, Op.DELETE)))
    # every key's final presence follows from every agent's records
    net = Counter(x[2] for x in recs if x[6] == Result.OK and x[5] == Op.INSERT)
    net.subtract(x[2] for x in recs if x[6] == Result.OK and x[5] == Op.DELETE)
    assert set(net.values()) <= {0, 1}
    assert r["checks"]["final_keys"] == sum(net.values())


@pytest.mark.parametrize("structure", ["msqueue", "stack", "mpmc"])
def test_queue_with_kernel_producers_and_consumers(structure: str, tmp_path: Path) -> None:
    args = [structure, "-t", "1", "--consumers", "1", "-k", "1", "--kernel-consumers", "1",
            "-o", "20000", "--batch", "256"]
    if structure == "mpmc":
        args += ["--capacity", "1024"]
    r, recs = _run(*args, hist=tmp_path / "h.bin")
    per = _by_agent(recs)
    kern = r["per_kernel_thread"]
    assert [k["role"] for k in kern] == ["producer", "consumer"]
    # kernel agent i records as KERNEL | i: the producer is 0, the consumer 1
    assert [k["history_records"] for k in kern] == [per[KERNEL | 0], per[KERNEL | 1]]
    assert [k["ops"] for k in kern] == [per[KERNEL | 0], per[KERNEL | 1]]
    kpush = [x for x in recs if x[4] == KERNEL | 0]
    assert {x[5] for x in kpush} == {Op.INSERT}
    ok_push = [x[2] for x in kpush if x[6] == Result.OK]
    # the kernel producer's values (id 1 << 16 in the high bits), each once, in order
    base = (1 << 16) << 40
    assert ok_push == [base + i for i in range(20000)]
    assert {x[5] for x in recs if x[4] == KERNEL | 1} == {Op.POP}
    # every value pushed by anyone is popped exactly once, by someone
    pushes = sorted(x[2] for x in recs if x[5] == Op.INSERT and x[6] == Result.OK)
    pops = sorted(x[2] for x in recs if x[5] == Op.POP and x[6] == Result.OK)
    assert pushes == pops and len(pushes) == 40000
    assert r["checks"]["pushed"] == 40000
    # the kernel consumer took some of the users' values and the user consumer some of
    # the kernel's: the agents really met on one structure
    kpopped = {x[2] >> 40 for x in recs if x[4] == KERNEL | 1 and x[6] == Result.OK}
    upopped = {x[2] >> 40 for x in recs if x[4] == 256 and x[6] == Result.OK}
    assert 1 in kpopped or (1 << 16) in upopped


def test_kernel_batch_records_each_operation_exactly() -> None:
    """One kernel batch, quiescent: the records are the operations, in order, with the
    results and values the batch reports."""
    with Arena(2048) as arena:
        s = arena.create("hash", 1024, name="kh")
        kb = s.run_kernel(500, insert=1, key_lo=10, key_span=100, seq=True, val_key=True,
                          history=True, agent=KERNEL | 5, per_call=128)
        recs = [REC.unpack_from(kb.history, i) for i in range(0, len(kb.history), REC.size)]
        assert len(recs) == kb.ops == 500
        assert [x[2] for x in recs] == [10 + i % 100 for i in range(500)]
        assert all(x[3] == x[2] and x[4] == KERNEL | 5 and x[5] == Op.INSERT for x in recs)
        assert [x[6] for x in recs] == [Result.OK] * 100 + [Result.EXISTS] * 400
        assert all(a[0] <= a[1] <= b[0] for a, b in itertools.pairwise(recs))
        kb = s.run_kernel(100, search=1, key_lo=60, key_span=100, seq=True, history=True)
        recs = [REC.unpack_from(kb.history, i) for i in range(0, len(kb.history), REC.size)]
        assert [(x[2], x[3], x[6]) for x in recs] == (
            [(k, k, Result.OK) for k in range(60, 110)]
            + [(k, 0, Result.NOT_FOUND) for k in range(110, 160)])
        q = arena.create("msqueue", 1024, name="kq")
        kb = q.run_kernel(3, insert=1, key_lo=0, key_span=3, seq=True, val_base=77,
                          history=True, agent=KERNEL)
        kb2 = q.run_kernel(4, pop=1, collect=True, history=True, agent=KERNEL | 1)
        recs = [REC.unpack_from(h, i) for h in (kb.history, kb2.history)
                for i in range(0, len(h), REC.size)]
        assert [(x[2], x[3], x[5], x[6]) for x in recs] == [
            (77, 0, Op.INSERT, Result.OK), (78, 0, Op.INSERT, Result.OK),
            (79, 0, Op.INSERT, Result.OK), (77, 0, Op.POP, Result.OK),
            (78, 0, Op.POP, Result.OK), (79, 0, Op.POP, Result.OK),
            (0, 0, Op.POP, Result.NOT_FOUND)]
        # without history nothing is recorded
        assert q.run_kernel(2, pop=1).history == b""


@pytest.mark.parametrize("own", [True, False])
def test_key_counters_per_thread_or_shared(own: bool, monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    """The driver's per-key counts are the same whether each thread keeps its own counter
    array (plain updates) or all share one (atomic adds, past NET_OWN_MAX): prefill plus
    every recorded successful insert minus delete, key by key."""
    from array import array

    from pipeline import stress_run
    from pipeline.stress_config import StressConfig, check
    from pipeline.stress_verify import history, keyed

    if not own:
        monkeypatch.setattr(stress_run, "NET_OWN_MAX", 0)
    cfg = StressConfig(structure="hash", workers=2, threads=2, kernel_threads=0,
                       operations=20000, keys=128, verify=True, history=str(tmp_path / "h"),
                       pages=4096)
    check(cfg, "test")
    out = stress_run.run(cfg)
    assert out.net is not None
    raw = history(out)
    want = array("i", bytes(4 * 128))
    for _, _, key, _, _, op, res, _ in REC.iter_unpack(raw):
        if res == Result.OK and op in (Op.INSERT, Op.DELETE):
            want[key - 1] += 1 if op == Op.INSERT else -1
    assert out.net == want
    assert sum(want) == len(out.final_items)
    assert all(keyed(out)["invariants"].values())


@pytest.mark.parametrize("structure", ["msqueue", "stack"])
def test_recording_kernel_agents_in_a_full_arena(tmp_path: Path, structure: str) -> None:
    """The arena fills up under recording kernel producers and a kernel consumer: their
    pushes that find no memory are counted NOMEM, every agent ends cleanly, the history
    still covers every operation and passes the checker (the kernel threads take their
    history buffers before the run, while the arena has room)."""
    r, recs = _run(structure, "-t", "2", "-k", "2", "--kernel-consumers", "1", "--pages", "300",
                   "-o", "2000000", hist=tmp_path / "h.bin")
    kern = r["per_kernel_thread"]
    assert [k["role"] for k in kern] == ["producer", "producer", "consumer"]
    nomem = r["total"]["failures"]["insert"]["NOMEM"]
    assert nomem > 0, r["total"]
    assert sum(k["failures"].get("insert", {}).get("NOMEM", 0) for k in kern) > 0, kern
    per = _by_agent(recs)
    assert [k["history_records"] for k in kern] == [per[KERNEL | i] for i in range(3)]
    assert [k["ops"] for k in kern] == [per[KERNEL | i] for i in range(3)]
    assert r["memory"]["allocation_failures"] >= nomem


def test_no_room_for_kernel_history_buffers_is_one_line() -> None:
    """A prefill that leaves no room for a recording kernel thread's history buffer stops
    the run before it starts: one line naming the fix, exit 2, no traceback."""
    res = stress("hash", "-t", "1", "-k", "1", "--pages", "100", "--keys", "8000",
                 "--prefill", "0.7", "-o", "1000", "--check-linearizability")
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "kernel thread 1" in lines[0] and "history records" in lines[0]
    assert "raise --pages" in lines[0]
