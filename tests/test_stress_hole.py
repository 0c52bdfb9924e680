"""A producer killed between publishing its node and linking it (the mpsc queue's
exchange and link) leaves the node before it without a successor for good: every pop
after it says BUSY. Made here by hand in a real arena, exactly as such a kill leaves
it (the link cleared), then drained by the stress driver's own final drain and checked
by its own verification: the drain must end (not spin), return everything before the
gap in order, say it stopped, and the check must accept each producer's values as a
prefix only when a producer died."""

from __future__ import annotations

import ctypes
import struct
import threading
from array import array

import pytest
from conftest import needs_root

from pipeline.ds import Arena, Structure, meta_of
from pipeline.pool import SEQ_BITS, QueueResult
from pipeline.stress_agents import CTL_STOP, control_words
from pipeline.stress_config import StressConfig
from pipeline.stress_run import Outcome, _final_drain
from pipeline.stress_verify import hidden_count, invariants

PAGE = 4096
PRODUCERS = (1, 2)
EACH = 10
NODE_NEXT = 0  # struct mpsc_node: next, key, val
HANG = 60  # s: far beyond the drain's own 1 s bound; only a drain that never ends reaches it


def _pushes() -> list[int]:
    """Producer 1's and 2's values, interleaved the way two producers' pushes land."""
    return [p << SEQ_BITS | i for i in range(EACH) for p in PRODUCERS]


def _node_of(arena: Arena, value: int) -> int:
    """The arena address of the queue node holding key == val == value (unique)."""
    info = arena._core.info()
    lo = info["base"] + info["space_first_page"] * PAGE
    pattern = struct.pack("<QQ", value, value)
    for page in range(info["space_pages"]):
        at = ctypes.string_at(lo + page * PAGE, PAGE + 16).find(pattern)
        if at >= 0 and at % 8 == 0:
            return lo + page * PAGE + at - 8
    raise AssertionError(f"no node holds {value:#x}")


def _stub_of(s: Structure, first: int) -> int:
    """The queue's stub (in its head, struct ds_mpsc) while it links to the node first:
    the one word of the head that holds that node's address."""
    head = ctypes.string_at(s.address, s.meta.head_size)
    words = struct.unpack(f"<{len(head) // 8}Q", head)
    at = [i for i, w in enumerate(words) if w == first]
    assert len(at) == 1, at
    return s.address + 8 * at[0] - NODE_NEXT


def _unlink(arena: Arena, s: Structure, before: int | None, after: int) -> None:
    """What a producer killed between its exchange and its link leaves: the node it
    got from the exchange (holding before, or the stub for None: the queue was empty)
    never learns its successor (after)."""
    b = _node_of(arena, after)
    a = _node_of(arena, before) if before is not None else _stub_of(s, b)
    nxt = ctypes.c_uint64.from_address(a + NODE_NEXT)
    assert nxt.value == b, "the nodes are not linked as pushed"
    nxt.value = 0


def _drain(cfg: StressConfig, arena: Arena, s: Structure) -> Outcome:
    """The driver's final drain, on a thread so that a drain that never ends fails the
    test instead of hanging it: the loop reads the stop word every 1,024 pops."""
    out = Outcome(cfg, [], [], [], array("Q"), None, [])
    ctl = memoryview(bytearray(8 * control_words(1))).cast("Q")
    t = threading.Thread(target=_final_drain, args=(cfg, arena, s, ctl, 0, out))
    t.start()
    t.join(HANG)
    ended = not t.is_alive()
    ctl[CTL_STOP] = 1
    t.join()
    assert ended, f"the final drain was still popping after {HANG} s"
    return out


@needs_root
@pytest.mark.parametrize(("cut", "history"), [(7, False), (7, True), (-1, False)])
def test_the_drain_stops_at_an_unlinked_push(cut: int, history: bool) -> None:
    """cut: the producer of values[cut + 1] was killed before its link; -1: the first
    producer, on an empty queue (its node's predecessor is the stub)."""
    cfg = StressConfig(structure="mpsc", check_linearizability=history)
    values = _pushes()
    with Arena(1024) as arena:
        s = arena.create("mpsc")
        assert s.insert_many(array("Q", values)).ok == len(values)
        _unlink(arena, s, values[cut] if cut >= 0 else None, values[cut + 1])
        out = _drain(cfg, arena, s)
        assert out.drain_stuck
        # a node is returned once its successor is known: the one before the gap stays
        assert list(out.drained) == values[:max(cut, 0)]
        assert s.verify().ok is False  # the chain does not reach the last node pushed
        if history:
            assert out.drain_history  # the pops it tried are on record
    drain = QueueResult(popped=out.drained.tobytes())
    dead = cut + 1
    killed = values[dead] >> SEQ_BITS
    pushed: dict[int, int | None] = {p: EACH for p in PRODUCERS}
    pushed[killed] = None
    inv = invariants(meta_of("mpsc"), pushed, [], drain, hidden=True)
    assert all(inv.values()), inv
    alive = next(p for p in PRODUCERS if p != killed)
    behind = sum(1 for v in values[max(cut, 0):] if v >> SEQ_BITS == alive)
    assert hidden_count(pushed, [drain]) == behind


@needs_root
def test_the_drain_of_a_whole_queue_is_not_stuck() -> None:
    values = _pushes()
    with Arena(1024) as arena:
        s = arena.create("mpsc")
        assert s.insert_many(array("Q", values)).ok == len(values)
        out = _drain(StressConfig(structure="mpsc"), arena, s)
        assert not out.drain_stuck
        assert list(out.drained) == values
        v = s.verify()
        assert v.ok and v.count == 0


def test_prefix_check_refuses_gaps_doubles_and_overcounts() -> None:
    """With a hidden rest, each producer's values must still be 0, 1, ..., k: a value
    skipped, popped twice, or more values than a live producer pushed all fail."""
    meta = meta_of("mpsc")
    pushed: dict[int, int | None] = {1: 4, 2: None}

    def ok(seqs: dict[int, list[int]]) -> bool:
        vals = array("Q", [p << SEQ_BITS | i for p, ii in seqs.items() for i in ii])
        inv = invariants(meta, pushed, [], QueueResult(popped=vals.tobytes()), hidden=True)
        return all(inv.values())

    assert ok({1: [0, 1], 2: [0, 1, 2]})
    assert ok({1: [], 2: []})
    assert not ok({1: [0, 2], 2: [0]})          # a gap in a live producer's values
    assert not ok({1: [0], 2: [0, 1, 1]})       # a value twice
    assert not ok({1: [0, 1, 2, 3, 4], 2: []})  # more than the live producer pushed
    assert not ok({1: [1, 0], 2: []})           # out of order (FIFO)
