"""pipeline.ds on the real kernel: every registered structure against a Python model
through batched calls, pool workers and kernel batches at once with an exact final
check, and `python -m pipeline ds list`."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from array import array
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline import ds
from pipeline.ds import Arena, Meta, Op, Result

ROOT = Path(__file__).resolve().parent.parent
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs: needs root")
NAMES = [m.name for m in ds.registry()]


@pytest.fixture(scope="module")
def arena() -> Iterator[Arena]:
    a = Arena(16384, poison=True)
    yield a
    a.close()


class Model:
    """What a structure must answer, op by op (tests/test_ds_c.py has the long form)."""

    def __init__(self, meta: Meta, capacity: int) -> None:
        self.meta, self.map, self.seq = meta, dict[int, int](), deque[tuple[int, int]]()
        self.cap = capacity if meta.bounded else None

    def apply(self, op: Op, k: int, v: int) -> tuple[int, int]:
        m = self.meta
        if op == Op.INSERT:
            if m.keyed:
                if k in self.map:
                    return Result.EXISTS, 0
                self.map[k] = v
            elif self.cap is not None and len(self.seq) >= self.cap:
                return Result.FULL, 0
            else:
                self.seq.append((k, v))
            return Result.OK, 0
        if op in (Op.DELETE, Op.SEARCH):
            if not m.keyed:
                return Result.INVALID, 0
            if k not in self.map:
                return Result.NOT_FOUND, 0
            return Result.OK, self.map.pop(k) if op == Op.DELETE else self.map[k]
        if m.keyed and not m.ordered:
            return Result.INVALID, 0
        if m.keyed:
            if not self.map:
                return Result.NOT_FOUND, 0
            key = min(self.map)
            return Result.OK, self.map.pop(key)
        if not self.seq:
            return Result.NOT_FOUND, 0
        return Result.OK, (self.seq.pop() if m.lifo else self.seq.popleft())[1]

    def items(self) -> list[tuple[int, int]]:
        if self.meta.keyed:
            return sorted(self.map.items())
        return list(reversed(self.seq)) if self.meta.lifo else list(self.seq)


@needs_root
@pytest.mark.parametrize("name", NAMES)
def test_against_python_model(arena: Arena, name: str) -> None:
    s = arena.create(name, 16)
    model = Model(s.meta, 16)
    rng = random.Random(7)
    ops_pool = [Op.INSERT, Op.INSERT, Op.DELETE, Op.SEARCH, Op.POP]
    for _ in range(20):
        n = rng.randrange(1, 300)
        ops = bytes(rng.choice(ops_pool) for _ in range(n))
        keys = array("Q", (rng.randrange(40) for _ in range(n)))
        vals = array("Q", (rng.randrange(1, 1 << 62) for _ in range(n)))
        b = s.exec(ops, keys, vals)
        assert b.n == n
        for i in range(n):
            want, wval = model.apply(Op(ops[i]), keys[i], vals[i])
            got = b.results[i]
            if Op(ops[i]) == Op.POP and not s.meta.keyed and not (s.meta.fifo or s.meta.lifo):
                continue  # unordered: any element may come out
            assert (got, b.ovals[i] if got == Result.OK else 0) == (want, wval), (name, i)
        items = model.items()
        v = s.verify()
        assert v.ok and v.count == len(items), (name, v)
        assert v.keysum == sum(k for k, _ in items) % (1 << 64)
        got_items = s.items()
        assert (got_items if s.meta.ordered or s.meta.fifo or s.meta.lifo
                else sorted(got_items)) == (items if s.meta.keyed or s.meta.fifo or s.meta.lifo
                                            else sorted(items))
        if s.meta.keyed:
            assert s.range(10, 20) == [kv for kv in items if 10 <= kv[0] < 20] or \
                not s.meta.ordered
    st = s.stats()
    assert st["user"]["insert"]["count"] > 0


@needs_root
def test_large_batches_and_names(arena: Arena) -> None:
    # how fast these batches run is the benchmark's figure (`bench --only ds`: arena_user)
    s = arena.create("hash", 1 << 17, name="fast")
    assert arena.lookup("fast").address == s.address
    keys = array("Q", range(1, 200_001))
    assert s.insert_many(keys).ok == len(keys)
    found = s.search_many(keys)
    assert found.ok == len(keys) and found.ovals == keys
    kb = s.run_kernel(10_000, delete=1, key_lo=1, key_span=10_000, seq=True, collect=True)
    assert kb.succeeded[1] == 10_000 and sorted(kb.out) == [(k, k) for k in range(1, 10_001)]
    assert s.verify(kernel=True).count == s.verify().count == 190_000
    assert arena.kernel_totals()["kernel_ops"] >= 10_000


BOUNDED = [m.name for m in ds.registry() if m.bounded]
# share of pushes among the runs of one op: push-heavy fills, pop-heavy drains
MIXES = {"push_heavy": 0.75, "pop_heavy": 0.25}


def corner_ops(rng: random.Random, capacity: int, push_share: float, runs: int) -> bytes:
    """Runs of one op each, of 1 to 2*capacity ops: long enough to fill the structure from
    empty and to drain it from full, whatever the mix, so both corners come up often. The
    first op is a pop: the ring's first lap starts empty."""
    out = bytearray([Op.POP])
    for _ in range(runs):
        op = Op.INSERT if rng.random() < push_share else Op.POP
        out += bytes([op]) * rng.randint(1, 2 * capacity)
    return bytes(out)


@needs_root
@pytest.mark.parametrize("mix", list(MIXES))
@pytest.mark.parametrize("capacity", [2, 4096])
@pytest.mark.parametrize("name", BOUNDED)
def test_bounded_corners_against_model(arena: Arena, name: str, capacity: int,
                                       mix: str) -> None:
    """A bounded FIFO against its model through empty, full and many laps of the ring: a pop
    on an empty ring whose slots hold the records of earlier laps must say NOT_FOUND (a
    consumer that takes any non-zero commit word hands back a stale record there)."""
    s = arena.create(name, capacity)
    assert s.meta.bounded and s.meta.fifo
    model = Model(s.meta, capacity)
    rng = random.Random(capacity * 31 + len(mix))
    ops = corner_ops(rng, capacity, MIXES[mix], 40)
    pushed = popped = 0
    reached: set[str] = set()
    next_val = 1
    for start in range(0, len(ops), 4096):
        chunk = ops[start:start + 4096]
        keys = array("Q", range(next_val, next_val + len(chunk)))
        vals = array("Q", (k * 3 + 1 for k in keys))
        next_val += len(chunk)
        b = s.exec(chunk, keys, vals)
        assert b.n == len(chunk)
        for i, op in enumerate(chunk):
            want, wval = model.apply(Op(op), keys[i], vals[i])
            got = (b.results[i], b.ovals[i] if b.results[i] == Result.OK else 0)
            assert got == (want, wval), (name, capacity, mix, start + i, pushed, popped)
            lap = pushed // capacity
            if want == Result.FULL:
                reached.add("full" if lap < 2 else "full after a lap")
            elif want == Result.NOT_FOUND:
                reached.add("empty" if popped < capacity else "empty after a lap")
            elif op == Op.INSERT:
                pushed += 1
            else:
                popped += 1
        v = s.verify()
        assert v.ok and v.count == len(model.items()), (name, v)
    assert s.items() == model.items()
    laps = pushed // capacity
    assert reached == {"empty", "full", "empty after a lap", "full after a lap"}, reached
    assert laps >= 3, f"{pushed} pushes: {laps} laps of a ring of {capacity}"


@needs_root
def test_pool_and_kernel_exact(arena: Arena, tmp_path: Path) -> None:
    """Two worker processes and a kernel thread on one hash, disjoint ranges: the final
    key set is exactly the union of their models."""
    from pipeline.kernel import ensure_mounts
    from pipeline.pool import KernelThread, KeyedTask, Pool, keyed_kernel, keyed_user
    ensure_mounts()
    s = arena.create("hash", 1 << 15, name="pooled")
    pin = f"/sys/fs/bpf/arena-pipeline-test-ds-{os.getpid()}"
    arena.pin(pin)
    try:
        with Pool(pin, 2) as pool:
            pool.warm(2)
            # each agent stops at 400,000 ops or at the deadline, whichever comes first;
            # the deadline starts once the workers are up, so a slow machine's start-up
            # never leaves an agent with no time at all
            deadline = time.time() + 5.0
            tasks = [KeyedTask("pooled", 1 + i * 5000, 1 + (i + 1) * 5000, (50, 30, 20),
                               1024, deadline, 400_000, i) for i in range(3)]
            futs = [pool.submit(keyed_user, t) for t in tasks[:2]]
            kt = KernelThread(keyed_kernel, s, tasks[2])
            kt.start()
            results = [f.result() for f in futs] + [kt.join_result()]
    finally:
        arena.unpin()
    want = array("Q")
    for r in results:
        assert r.mismatches == 0 and r.ops > 0
        want.frombytes(r.keys)
    assert sorted(k for k, _ in s.items()) == sorted(want)
    assert s.verify().count == len(want)
    st = s.stats()
    assert st["kernel"]["insert"]["count"] > 0 and st["user"]["insert"]["count"] > 0


@needs_root
def test_bad_instance_is_an_error(arena: Arena) -> None:
    with pytest.raises(ds._ds.CoreError):
        arena._core.exec(ds._ds.DS_ARENA_BASE + 4096 * 5, 3, 1, count=1)
    with pytest.raises(KeyError):
        arena.lookup("nope")
    with pytest.raises(ds._ds.CoreError):
        Arena(4096)  # one arena per process


def test_ds_list_json() -> None:
    out = subprocess.run([sys.executable, "-m", "pipeline", "ds", "list", "--format", "json"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    rows = json.loads(out)
    assert [r["name"] for r in rows] == NAMES
    for r in rows:
        assert r["description"] and r["node_size"] > 0 and r["producer_consumer"]
        assert "insert" in r["operations"]
    table = subprocess.run([sys.executable, "-m", "pipeline", "ds", "list"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout
    assert all(n in table for n in NAMES)
    if shutil.which("jq"):
        names = subprocess.run(["jq", "-r", ".[].name"], input=out, capture_output=True,
                               text=True, check=True).stdout.split()
        assert names == NAMES
