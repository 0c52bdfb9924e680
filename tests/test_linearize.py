"""The linearizability checker (pipeline/linearize.py, pipeline/_lin).

- Hand-written histories of every kind, linearizable and not, with the records each
  explanation must name.
- Small random histories, correct and broken, decided the same as by an exhaustive search
  written here (every order of the operations that respects real time).
- Simulated correct histories (pipeline.bench.linearize_bench.simulate) pass, also at
  100,000 operations; sound mutations of them (a value removed twice, a value never added,
  a search answering a value never inserted) fail.
- The deliberately broken structures (tests/c/lin_driver.c built with
  -DDS_TEST_BROKEN_QUEUE_DUP / -DDS_TEST_BROKEN_HASH_MISS) are caught on real threaded runs;
  the correct builds of the same workload pass.
- The `linearize` command: exit statuses and its one-line errors.
"""

from __future__ import annotations

import functools
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import linearize as lin
from pipeline.bench.linearize_bench import simulate
from pipeline.ds import Op, Result

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "tests"

INS, DEL, POP, SEA = Op.INSERT, Op.DELETE, Op.POP, Op.SEARCH
OK, NF, EX = Result.OK, Result.NOT_FOUND, Result.EXISTS

# (t_inv, t_resp, key, value, op, result)
Rec = tuple[int, int, int, int, int, int]


def hist(recs: Sequence[Rec]) -> bytes:
    return lin.pack([(a, b, k, v, i % 4, op, res) for i, (a, b, k, v, op, res)
                     in enumerate(recs)])


def named(res: lin.LinResult) -> list[int]:
    return [r.index for r in res.operations]


# ---- the names ----


def test_names_match_the_header() -> None:
    assert {int(o): o.name.lower() for o in Op} == lin.OP_NAMES
    assert {int(r): r.name for r in Result} == lin.RESULT_NAMES
    assert lin.RECORD_SIZE == 40


# ---- maps and sets ----


def test_map_sequential_and_overlapping() -> None:
    good = [(0, 1, 5, 7, INS, OK), (2, 3, 5, 7, SEA, OK), (4, 5, 5, 7, DEL, OK),
            (6, 7, 5, 0, SEA, NF), (8, 9, 5, 3, INS, OK), (10, 11, 5, 9, INS, EX)]
    res = lin.check("map", hist(good))
    assert res.ok and res.checked == 6 and res.partitions == 1 and not res.undecided

    # only one order works: the insert (long) between the two searches
    only = [(0, 10, 5, 7, INS, OK), (1, 2, 5, 0, SEA, NF), (3, 4, 5, 7, SEA, OK)]
    assert lin.check("map", hist(only)).ok
    # the same, but the found search ends before the missing one begins
    swapped = [(0, 10, 5, 7, INS, OK), (3, 4, 5, 0, SEA, NF), (1, 2, 5, 7, SEA, OK)]
    res = lin.check("map", hist(swapped))
    assert not res.ok and res.key == 5


def test_map_stale_read() -> None:
    stale = [(0, 1, 5, 1, INS, OK), (2, 3, 5, 1, DEL, OK), (4, 5, 5, 2, INS, OK),
             (6, 7, 5, 1, SEA, OK)]
    res = lin.check("map", hist(stale))
    assert not res.ok and res.key == 5
    # the search (#3) cannot follow the three before it
    assert named(res) == [3, 2, 1, 0]
    assert "key 5" in res.reason and "holds 2" in res.reason
    # a set compares presence only: the same history is a legal set history
    assert lin.check("set", hist(stale)).ok


def test_map_search_misses_present_key() -> None:
    miss = [(0, 1, 9, 4, INS, OK), (2, 3, 1, 4, INS, OK), (5, 6, 9, 0, SEA, NF),
            (7, 8, 1, 4, SEA, OK)]
    res = lin.check("map", hist(miss))
    assert not res.ok and res.key == 9 and named(res)[0] == 2
    assert res.explain().splitlines()[0].startswith("not linearizable: key 9")


def test_map_other_keys_do_not_matter() -> None:
    """P-compositionality: each key alone; a violation on one key is found among many."""
    recs: list[Rec] = []
    for k in range(50):
        recs += [(10 * k, 10 * k + 5, k, k, INS, OK), (10 * k + 6, 10 * k + 9, k, k, SEA, OK)]
    assert lin.check("map", hist(recs)).partitions == 50
    recs.append((1000, 1001, 17, 0, SEA, NF))
    res = lin.check("map", hist(recs))
    assert not res.ok and res.key == 17 and named(res)[0] == 100


def test_map_failed_operations_are_ignored() -> None:
    recs = [(0, 1, 5, 7, INS, OK), (1, 2, 5, 8, INS, Result.BUSY), (2, 3, 5, 8, INS, Result.NOMEM),
            (3, 4, 5, 0, DEL, Result.INVALID), (4, 5, 5, 7, SEA, OK)]
    res = lin.check("map", hist(recs))
    assert res.ok and res.checked == 2 and res.ignored == 3


def test_map_initial_contents() -> None:
    recs = [(0, 1, 5, 7, SEA, OK), (2, 3, 6, 0, SEA, NF)]
    assert not lin.check("map", hist(recs)).ok
    assert lin.check("map", hist(recs), initial={5: 7}).ok
    assert not lin.check("map", hist(recs), initial={5: 8}).ok
    assert not lin.check("map", hist(recs), initial={5: 7, 6: 1}).ok


def test_keyed_pops_are_checked_as_deletes() -> None:
    recs = [(0, 1, 3, 30, INS, OK), (2, 3, 3, 30, POP, OK), (4, 5, 0, 0, POP, NF)]
    res = lin.check("map", hist(recs))
    assert res.ok and res.unchecked == 2 and res.checked == 2
    twice = [*recs, (6, 7, 3, 30, POP, OK)]
    assert not lin.check("map", hist(twice)).ok


# ---- queues ----


def test_queue_good() -> None:
    recs = [(0, 10, 1, 0, INS, OK), (0, 10, 2, 0, INS, OK), (11, 12, 2, 0, POP, OK),
            (13, 14, 1, 0, POP, OK), (15, 16, 0, 0, POP, NF)]
    res = lin.check("queue", hist(recs))
    assert res.ok and res.checked == 5


def test_queue_fifo_violation() -> None:
    recs = [(0, 1, 1, 0, INS, OK), (2, 3, 2, 0, INS, OK), (4, 5, 2, 0, POP, OK),
            (6, 7, 1, 0, POP, OK)]
    res = lin.check("queue", hist(recs))
    assert not res.ok and res.key == 1 and named(res) == [0, 1, 2, 3]
    assert res.reason.startswith("FIFO order: 1 was enqueued (#0) before 2 (#1)")
    # as a stack the same history is correct
    assert lin.check("stack", hist(recs)).ok


def test_queue_value_lost_behind_a_dequeued_one() -> None:
    recs = [(0, 1, 1, 0, INS, OK), (2, 3, 2, 0, INS, OK), (4, 5, 2, 0, POP, OK)]
    res = lin.check("queue", hist(recs))
    assert not res.ok and named(res) == [0, 1, 2] and "never was" in res.reason


def test_queue_twice_unknown_and_early() -> None:
    twice = [(0, 1, 1, 0, INS, OK), (2, 3, 1, 0, POP, OK), (4, 5, 1, 0, POP, OK)]
    res = lin.check("queue", hist(twice))
    assert not res.ok and named(res) == [1, 2, 0] and "twice" in res.reason
    unknown = [(0, 1, 1, 0, INS, OK), (2, 3, 8, 0, POP, OK)]
    res = lin.check("queue", hist(unknown))
    assert not res.ok and res.key == 8 and named(res) == [1] and "never enqueued" in res.reason
    early = [(4, 5, 1, 0, INS, OK), (0, 3, 1, 0, POP, OK)]
    res = lin.check("queue", hist(early))
    assert not res.ok and named(res) == [0, 1]


def test_queue_empty_pops() -> None:
    # empty while the value was certainly inside
    inside = [(0, 1, 1, 0, INS, OK), (2, 3, 0, 0, POP, NF), (4, 5, 1, 0, POP, OK)]
    res = lin.check("queue", hist(inside))
    assert not res.ok and named(res) == [1, 0, 2]
    # the enqueue overlaps the empty answer: it may take effect after it
    overlap = [(0, 5, 1, 0, INS, OK), (1, 2, 0, 0, POP, NF), (6, 7, 1, 0, POP, OK)]
    assert lin.check("queue", hist(overlap)).ok
    # no single value covers the empty answer, two in a row do
    chain = [(0, 1, 1, 0, INS, OK), (5, 6, 1, 0, POP, OK), (3, 4, 2, 0, INS, OK),
             (11, 12, 2, 0, POP, OK), (2, 10, 0, 0, POP, NF)]
    res = lin.check("queue", hist(chain))
    assert not res.ok and named(res) == [4, 0, 1, 2, 3]


# ---- stacks ----


def test_stack_lifo() -> None:
    good = [(0, 1, 1, 0, INS, OK), (2, 3, 2, 0, INS, OK), (4, 5, 2, 0, POP, OK),
            (6, 7, 1, 0, POP, OK), (8, 9, 0, 0, POP, NF)]
    assert lin.check("stack", hist(good)).ok
    bad = [(0, 1, 1, 0, INS, OK), (2, 3, 2, 0, INS, OK), (4, 5, 1, 0, POP, OK),
           (6, 7, 2, 0, POP, OK)]
    res = lin.check("stack", hist(bad))
    assert not res.ok and res.key == 1 and named(res) == [0, 1, 2, 3]
    assert res.reason.startswith("LIFO order")


def test_stack_three_value_chain() -> None:
    """No pair of values shows it: 3's push precedes 4's, 4 is pushed before 2's pop and
    never popped (so it lies below 2), hence 3 lies below 2, yet 3 is popped while 2 is
    still in. Found by the search, not by the pairwise patterns."""
    recs = [(3, 4, 3, 0, INS, OK), (3, 13, 1, 0, INS, OK), (4, 9, 2, 0, INS, OK),
            (7, 11, 4, 0, INS, OK), (10, 13, 3, 0, POP, OK), (13, 19, 2, 0, POP, OK)]
    res = lin.check("stack", hist(recs))
    assert not res.ok and not res.undecided
    assert "the search decided" in res.reason
    # without the never-popped 4 it is fine
    assert lin.check("stack", hist([r for r in recs if r[2] != 4])).ok


def test_stack_budget_gives_undecided() -> None:
    recs = [(3, 4, 3, 0, INS, OK), (3, 13, 1, 0, INS, OK), (4, 9, 2, 0, INS, OK),
            (7, 11, 4, 0, INS, OK), (10, 13, 3, 0, POP, OK), (13, 19, 2, 0, POP, OK)]
    res = lin.check("stack", hist(recs), budget=2)
    assert res.undecided and not res.ok and res.explain().startswith("undecided: ")


# ---- bad input ----


@pytest.mark.parametrize(("kind", "data", "words"), [
    ("queue", hist([(0, 1, 1, 0, INS, OK)])[:-1], "not a whole number"),
    ("map", hist([(5, 1, 1, 0, INS, OK)]), "responds before it is invoked"),
    ("map", hist([(0, 1, 1, 0, INS, NF)]), "cannot answer result 1"),
    ("queue", hist([(0, 1, 1, 0, INS, OK), (2, 3, 1, 0, INS, OK)]), "added twice"),
    ("stack", hist([(0, 1, 1, 0, SEA, OK)]), "not an operation of a stack"),
    ("tree", b"", "is not one of"),
])
def test_bad_input(kind: str, data: bytes, words: str) -> None:
    with pytest.raises(lin.HistoryError, match=words):
        lin.check(kind, data)


# ---- against an exhaustive search ----


def brute(kind: str, recs: Sequence[Rec]) -> bool:
    """Is there an order of all operations that respects real time and is legal?"""
    n = len(recs)

    def step(state: tuple[int, ...], r: Rec) -> tuple[int, ...] | None:
        _, _, k, v, op, res = r
        if kind in ("queue", "stack"):
            if op == INS:
                return (*state, k)
            if res == NF:
                return state if not state else None
            if not state or (state[0] if kind == "queue" else state[-1]) != k:
                return None
            return state[1:] if kind == "queue" else state[:-1]
        d = dict(zip(state[::2], state[1::2], strict=True))
        if kind == "set":
            v = 0
        present = k in d
        if op == INS and res == OK:
            if present:
                return None
            d[k] = v
        elif op == INS:
            if not present:
                return None
        elif res == NF:
            if present:
                return None
        elif not present or d[k] != v:
            return None
        elif op == DEL:
            del d[k]
        return tuple(x for kv in sorted(d.items()) for x in kv)

    @functools.cache
    def go(left: int, state: tuple[int, ...]) -> bool:
        if not left:
            return True
        live = [i for i in range(n) if left >> i & 1]
        first = min(recs[i][1] for i in live)
        for i in live:
            if recs[i][0] <= first:
                nxt = step(state, recs[i])
                if nxt is not None and go(left & ~(1 << i), nxt):
                    return True
        return False

    return go((1 << n) - 1, ())


@st.composite
def small_history(draw: st.DrawFn, kind: str) -> list[Rec]:
    """Arbitrary small histories: mostly not linearizable, some are."""
    n = draw(st.integers(1, 7))
    times = st.tuples(st.integers(0, 20), st.integers(0, 10))
    recs: list[Rec] = []
    if kind in ("queue", "stack"):
        adds = draw(st.integers(0, n))
        for v in range(1, adds + 1):
            a, w = draw(times)
            recs.append((a, a + w, v, 0, INS, OK))
        for _ in range(n - adds):
            a, w = draw(times)
            v = draw(st.integers(0, adds + 1))
            recs.append((a, a + w, v, 0, POP, OK) if v else (a, a + w, 0, 0, POP, NF))
    else:
        for _ in range(n):
            a, w = draw(times)
            op = draw(st.sampled_from([INS, DEL, SEA]))
            res = draw(st.sampled_from([OK, EX] if op == INS else [OK, NF]))
            recs.append((a, a + w, draw(st.integers(1, 2)), draw(st.integers(0, 2)), op, res))
    return recs


def _agree(kind: str, recs: list[Rec]) -> None:
    try:
        got = lin.check(kind, hist(recs))
    except lin.HistoryError:
        return  # a value popped twice by the draw is fine; added twice cannot be drawn
    assert not got.undecided
    assert got.ok == brute(kind, recs), (kind, recs, got.explain())


@pytest.mark.parametrize("kind", lin.KINDS)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_same_verdict_as_exhaustive_search(kind: str, data: st.DataObject) -> None:
    _agree(kind, data.draw(small_history(kind)))


@pytest.mark.parametrize("kind", lin.KINDS)
@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(1, 9), agents=st.integers(1, 4))
def test_simulated_small_histories_agree(kind: str, seed: int, n: int, agents: int) -> None:
    """Correct histories, and each with one random change (times moved, a result flipped,
    two removals' values swapped): same verdict as the exhaustive search."""
    data = simulate(kind, n, agents=agents, keys=2, seed=seed, max_duration=30, max_gap=10)
    recs: list[Rec] = [(a, b, k, v, op, res) for a, b, k, v, _, op, res, _ in
                       (lin.RECORD.unpack_from(data, i * 40) for i in range(n))]
    assert lin.check(kind, hist(recs)).ok and brute(kind, recs)
    rng = random.Random(seed)
    i = rng.randrange(n)
    a, b, k, v, op, res = recs[i]
    change = rng.randrange(3)
    if change == 0:
        a = max(0, a + rng.randint(-30, 30))
        b = max(a, b + rng.randint(-30, 30))
    elif change == 1 and op != INS:
        res = NF if res == OK else OK
        if kind in ("queue", "stack") and res == OK:
            k = rng.randint(1, n)
    elif change == 2:
        pops = [j for j, r in enumerate(recs) if r[4] == POP and r[5] == OK]
        if len(pops) >= 2:
            x, y = rng.sample(pops, 2)
            recs[x], recs[y] = (*recs[x][:2], recs[y][2], *recs[x][3:]), \
                (*recs[y][:2], recs[x][2], *recs[y][3:])
    recs[i] = (a, b, k, v, op, res) if change != 2 else recs[i]
    _agree(kind, recs)


# ---- big correct histories, and sound mutations of them ----


@pytest.mark.parametrize("kind", lin.KINDS)
def test_100k_operations_pass(kind: str) -> None:
    data = simulate(kind, 100_000, agents=8, seed=7)
    res = lin.check(kind, data)
    assert res.ok and res.checked == 100_000 and not res.undecided


def _records(data: bytes) -> list[list[int]]:
    return [list(lin.RECORD.unpack_from(data, i * 40)) for i in range(len(data) // 40)]


def _pack(recs: list[list[int]]) -> bytes:
    return b"".join(lin.RECORD.pack(*r) for r in recs)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32), kind=st.sampled_from(["queue", "stack"]))
def test_mutation_value_removed_twice(seed: int, kind: str) -> None:
    recs = _records(simulate(kind, 2000, agents=6, seed=seed))
    pops = [r for r in recs if r[5] == POP and r[6] == OK]
    rng = random.Random(seed)
    dup = list(rng.choice(pops))
    dup[0] = dup[1] = max(r[1] for r in recs) + 1
    recs.append(dup)
    res = lin.check(kind, _pack(recs))
    assert not res.ok and res.key == dup[2] and "twice" in res.reason


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32), kind=st.sampled_from(["queue", "stack"]))
def test_mutation_value_never_added(seed: int, kind: str) -> None:
    recs = _records(simulate(kind, 2000, agents=6, seed=seed))
    pops = [i for i, r in enumerate(recs) if r[5] == POP and r[6] == OK]
    i = random.Random(seed).choice(pops)
    recs[i][2] = 1 << 62
    res = lin.check(kind, _pack(recs))
    assert not res.ok and named(res) == [i] and res.key == 1 << 62


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_mutation_search_sees_a_value_never_inserted(seed: int) -> None:
    recs = _records(simulate("map", 2000, agents=6, seed=seed))
    finds = [i for i, r in enumerate(recs) if r[5] == SEA and r[6] == OK]
    i = random.Random(seed).choice(finds)
    recs[i][3] = 1 << 62
    res = lin.check("map", _pack(recs))
    assert not res.ok and res.key == recs[i][2] and i in named(res)
    # a set does not look at values
    assert lin.check("set", _pack(recs)).ok


# ---- the real structures, and the broken variants ----


def _driver(variant: str) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed (make setup installs it)")
    OUT.mkdir(parents=True, exist_ok=True)
    exe = OUT / f"lin_driver.{variant}"
    src = ROOT / "tests" / "c" / "lin_driver.c"
    lib = sorted((ROOT / "src").glob("*.c"))
    deps = [src, *(ROOT / "tests" / "c").glob("*.h"), *(ROOT / "include").rglob("*.h"), *lib]
    if exe.exists() and all(d.stat().st_mtime < exe.stat().st_mtime for d in deps):
        return exe
    flag = {"correct": [], "dup": ["-DDS_TEST_BROKEN_QUEUE_DUP"],
            "miss": ["-DDS_TEST_BROKEN_HASH_MISS"]}[variant]
    cmd = [gcc, "-O2", "-g", "-Wall", "-Wextra", "-Werror", f"-I{ROOT / 'include'}",
           f"-I{ROOT / 'tests' / 'c'}", *flag, str(src), *map(str, lib), "-o", str(exe),
           "-lpthread"]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stderr}"
    return exe


def _record(exe: Path, structure: str, threads: int, ops: int, path: Path) -> bytes:
    res = subprocess.run([str(exe), structure, str(threads), str(ops), str(path)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    data = path.read_bytes()
    assert res.stdout.strip() == f"lin_driver: {structure} {len(data) // 40} records"
    return data


@pytest.mark.parametrize(("structure", "kind", "threads", "ops"), [
    ("msqueue", "queue", 4, 25_000), ("mpmc", "queue", 4, 25_000),
    ("stack", "stack", 4, 25_000), ("hash", "map", 4, 25_000)])
def test_real_runs(tmp_path: Path, structure: str, kind: str, threads: int, ops: int) -> None:
    """The correct structures under threads: at least 100,000 operations each, linearizable."""
    data = _record(_driver("correct"), structure, threads, ops, tmp_path / "h.bin")
    res = lin.check(kind, data)
    assert res.ok, res.explain()
    assert res.checked >= 100_000


# a broken run is caught in the first try here; the race is a race, so up to three runs
ATTEMPTS = 3


def test_broken_queue_returns_an_element_twice(tmp_path: Path) -> None:
    exe = _driver("dup")
    for _ in range(ATTEMPTS):
        res = lin.check("queue", _record(exe, "msqueue", 4, 20_000, tmp_path / "h.bin"))
        if not res.ok:
            break
    assert not res.ok and not res.undecided
    assert res.reason.startswith(f"value {res.key} was dequeued twice")


def test_broken_hash_misses_a_present_key(tmp_path: Path) -> None:
    exe = _driver("miss")
    for _ in range(ATTEMPTS):
        res = lin.check("map", _record(exe, "hash", 4, 20_000, tmp_path / "h.bin"))
        if not res.ok:
            break
    assert not res.ok and not res.undecided and res.key is not None
    assert res.key < 32 and res.operations  # lin_driver's keys


def test_broken_variants_refused_outside_tests() -> None:
    """The broken variants cannot be compiled into a Python extension or a BPF program."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed")
    src = '#include <Python.h>\n#include "ds/registry.h"\n'
    import sysconfig
    res = subprocess.run([gcc, "-fsyntax-only", "-DDS_TEST_BROKEN_QUEUE_DUP",
                          f"-I{sysconfig.get_paths()['include']}", f"-I{ROOT / 'include'}",
                          "-x", "c", "-"], input=src, capture_output=True, text=True,
                         check=False)
    assert res.returncode != 0 and "userspace C tests only" in res.stderr


# ---- the command ----


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", "linearize", *args],
                          capture_output=True, text=True, timeout=60, check=False,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_command(tmp_path: Path) -> None:
    good = tmp_path / "good.bin"
    good.write_bytes(hist([(0, 1, 1, 0, INS, OK), (2, 3, 1, 0, POP, OK)]))
    res = _cli("--kind", "queue", str(good))
    assert res.returncode == 0 and res.stdout == "linearizable: 2 operations checked as a queue\n"
    bad = tmp_path / "bad.bin"
    bad.write_bytes(hist([(0, 1, 1, 0, INS, OK), (2, 3, 1, 0, POP, OK), (4, 5, 1, 0, POP, OK)]))
    res = _cli("--kind", "queue", str(bad))
    lines = res.stdout.splitlines()
    assert res.returncode == 1 and len(lines) == 4
    assert lines[0] == "not linearizable: value 1 was dequeued twice, by #1 and #2"
    assert lines[1] == "  #1 user 0/1: pop() -> OK 1 [2, 3] ns"
    res = _cli("--kind", "queue", "--format", "json", str(bad))
    assert res.returncode == 1 and '"ok": false' in res.stdout


@pytest.mark.parametrize(("setup", "args", "words"), [
    ("missing", ["--kind", "map"], "No such file or directory"),
    ("link", ["--kind", "map"], "symbolic link is not followed"),
    ("short", ["--kind", "map"], "not a whole number of 40-byte records"),
    ("dir", ["--kind", "map"], "not a regular file"),
    ("good", ["--kind", "map", "--budget", "-1"], "argument --budget: -1 is outside"),
])
def test_command_bad_input(tmp_path: Path, setup: str, args: list[str], words: str) -> None:
    path = tmp_path / "h.bin"
    if setup == "link":
        (tmp_path / "real.bin").write_bytes(b"")
        path.symlink_to(tmp_path / "real.bin")
    elif setup == "short":
        path.write_bytes(b"x" * 41)
    elif setup == "dir":
        path.mkdir()
    elif setup == "good":
        path.write_bytes(b"")
    res = _cli(*args, str(path))
    assert res.returncode == 2 and res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in res.stderr


def test_runtime_module_holds_no_checker() -> None:
    """The checker is a module of its own: the runtime (pipeline._core) carries none of it."""
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) is not installed")

    def symbols(module: str) -> set[str]:
        where = ROOT.joinpath(*module.split("."))
        built = sorted(where.parent.glob(f"{where.name}.*.so"), key=lambda f: f.stat().st_mtime)
        assert built, f"{module} is not built"
        so = built[-1]
        out = subprocess.run([nm, "-D", "--defined-only", str(so)], capture_output=True,
                             text=True, check=True).stdout
        return {ln.split()[-1] for ln in out.splitlines() if ln.strip()}

    checker = symbols("pipeline._linearize")
    assert {"lin_check_keyed", "lin_check_seq", "lin_stack_search"} <= checker
    for module in ("pipeline._core", "pipeline._ds", "pipeline.bench._native"):
        assert not {s for s in symbols(module) if s.startswith(("lin_", "wgl_"))}, module
