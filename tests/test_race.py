"""The race harness (bench/race) in its quick mode, as a smoke test of its exactness checks.

Nothing here times anything: the figures are the benchmark's business. What is asserted is
that every contender, ours in the arena and on plain memory and every counterpart from
Concurrency Kit and liburcu, delivered every item exactly once in every run (the harness
exits 1 otherwise, and run() raises RaceFailed), and that the checks do catch a lost item.
"""

from __future__ import annotations

import os
import shutil

import pytest

from pipeline.bench import race

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the arena is a BPF map: needs root")

EXPECTED = {
    ("spsc", "st"): {"spsc", "ck_ring spsc"},
    ("spsc", "pc"): {"spsc", "ck_ring spsc"},
    ("mpmc", "st"): {"mpmc", "ck_ring mpmc"},
    ("mpmc", "pc"): {"mpmc", "ck_ring mpmc"},
    ("msqueue", "st"): {"msqueue", "ck_fifo_mpmc", "urcu wfcqueue locked", "urcu lfqueue"},
    ("msqueue", "pc"): {"msqueue", "ck_fifo_mpmc", "urcu wfcqueue locked", "urcu lfqueue"},
    ("mpsc", "st"): {"mpsc", "urcu wfcqueue"},
    ("mpsc", "pc"): {"mpsc", "urcu wfcqueue"},
    ("stack", "st"): {"stack", "ck_stack upmc", "urcu lfstack"},
    ("stack", "pc"): {"stack", "ck_stack upmc", "urcu lfstack"},
    ("hash", "st"): {"hash", "urcu lfht", "ck_hs"},
    ("hash", "mix"): {"hash", "urcu lfht", "ck_hs"},
    ("hash", "rm1"): {"hash", "urcu lfht", "ck_hs"},
    ("hash", "rm2"): {"hash", "urcu lfht", "ck_hs"},
    ("skiplist", "st"): {"skiplist", "hash"},
    ("skiplist", "mix"): {"skiplist", "hash"},
    ("skiplist", "scan"): {"skiplist"},
}


@pytest.fixture(scope="module")
def harness() -> None:
    if not (shutil.which("gcc") and os.path.exists("/usr/include/ck_ring.h")):
        pytest.skip("libck-dev is not installed (make setup installs it)")
    race.ensure_built()


@needs_root
def test_quick_race_every_contender_exact(harness: None) -> None:
    figures = race.run(quick=True)
    assert figures["exact"] is True and figures["quick"] is True
    rounds = figures["rounds"]
    seen: dict[tuple[str, str], set[str]] = {}
    for row in figures["rows"]:
        key = (row["structure"], row["workload"])
        seen.setdefault(key, set()).add(row["contender"])
        # one figure per round: every run of this contender passed its checks
        assert len(row["samples"]) == rounds, row
        assert all(s > 0 for s in row["samples"]), row
        assert row["min"] <= row["median"] <= row["max"], row
        if row["ours"]:
            assert row["memory"] in ("arena", "plain"), row
    assert seen == EXPECTED
    # ours, in both memories, for each of our rows
    mems = {(r["structure"], r["workload"], r["memory"]) for r in figures["rows"] if r["ours"]}
    for (structure, workload), names in EXPECTED.items():
        if structure in names:
            assert {(structure, workload, "arena"), (structure, workload, "plain")} <= mems
    assert "vs best" in figures["table"] and "does less" in figures["table"]
    # each hash contender's read-mostly scaling, 2 threads against 1, from its own rows
    scaling = [ln for ln in figures["table"].splitlines() if ln.startswith("scaling ")]
    assert len(scaling) == 4, scaling  # ours in both memories, lfht, ck_hs
    assert figures["machine"]["line_transfer_ns"] > 0


@needs_root
@pytest.mark.parametrize("structure", ["spsc", "mpsc"])
@pytest.mark.parametrize(("fault", "first"), [("lose", "popped (33, 100), expected key 32"),
                                              ("double", "popped (32, 97), expected key 64")])
def test_a_lost_or_doubled_item_fails_the_race(harness: None, monkeypatch: pytest.MonkeyPatch,
                                               structure: str, fault: str, first: str) -> None:
    monkeypatch.setenv("RACE_SELF_TEST", fault)
    with pytest.raises(race.RaceFailed) as e:
        race.run(quick=True, only=[structure], rounds=1)
    msg = str(e.value)
    # ours in both memories and the counterpart, each caught at the same item
    for mem in ("arena", "plain/heap"):
        assert f"FAILED {structure} {structure} (1 thread, {mem}): {first}" in msg, msg
    counterpart = {"spsc": "ck_ring spsc", "mpsc": "urcu wfcqueue"}[structure]
    assert f"FAILED {structure} {counterpart} (1 thread, plain/heap): {first}" in msg, msg


def test_bad_arguments_refused() -> None:
    with pytest.raises(race.RaceError, match="no structure named queue"):
        race.run(quick=True, only=["queue"])
    with pytest.raises(race.RaceError, match="rounds must be 1 to 64"):
        race.run(quick=True, rounds=0)
