"""The C formatter's numbers and fields, straight from the arena queue."""

from __future__ import annotations

from conftest import needs_root, parse_jsonl

pytestmark = needs_root


def test_numbers_and_fields_of_burst_records() -> None:
    from pipeline import _core

    s = _core.Session(arena_pages=4096, queue_capacity=8192)
    try:
        s.enable(True)
        assert s.burst(5000, 1000) == (5000, 0)
        offset = -(10**18) - 12345  # negative offsets format too
        data, n = s.drain_json(10000, offset)
        assert n == 5000 and data.count(b"\n") == 5000
        events = parse_jsonl(data)
        # the burst program stores its loop index in ret: 0..999 per call
        assert [e["ret"] for e in events] == [i for _ in range(5) for i in range(1000)]
        assert [e["seq"] for e in events] == list(range(5000))
        assert all(e["wall_ns"] == e["ts_ns"] + offset for e in events)
        assert {e["trigger"] for e in events} == {"burst"}
        assert all(e["name"] == "burst" and "name_b64" not in e for e in events)
        # a record without a path: its fields say so
        assert {(e["path"], e["path_truncated"], e["mnt_ns"]) for e in events} == {("", False, 0)}
        st = s.stats()
        assert st["produced"] == st["consumed"] == 5000 and st["queued"] == 0
    finally:
        s.close()


def test_full_queue_drops_are_counted_and_nothing_is_reordered() -> None:
    from pipeline import _core

    s = _core.Session(arena_pages=1024, queue_capacity=1024)
    try:
        s.enable(True)
        published, dropped = s.burst(3000, 3000)
        assert (published, dropped) == (1024, 1976)
        data, n = s.drain_json(5000, 0)
        seqs = [e["seq"] for e in parse_jsonl(data)]
        assert n == 1024 and seqs == list(range(1024))
        st = s.stats()
        assert st["dropped_full"] == 1976 and st["high_water"] == 1024
    finally:
        s.close()
