"""How the nats sink cuts the reader's batches into messages (no server needed): whole lines,
in order, nothing lost or repeated, within the limits, and ids from the first and last
event's seq."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.consume import with_host
from pipeline.sinks.nats_batch import Outbox


def line(seq: int, name_len: int) -> bytes:
    return (json.dumps({"seq": seq, "pid": 7, "name": "x" * name_len},
                       separators=(",", ":")) + "\n").encode()


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(sizes=st.lists(st.lists(st.integers(0, 300), min_size=1, max_size=40), min_size=1,
                      max_size=12),
       max_bytes=st.integers(40, 3000), max_events=st.integers(1, 50),
       take_every=st.integers(1, 4))
def test_messages_are_whole_lines_in_order(sizes: list[list[int]], max_bytes: int,
                                           max_events: int, take_every: int) -> None:
    box = Outbox("h.r", max_bytes, max_events)
    seq = 0
    sent: list[bytes] = []
    messages = []
    for i, batch in enumerate(sizes):
        data = b"".join(line(seq + j, n) for j, n in enumerate(batch))
        box.add(data, len(batch))
        sent.append(data)
        seq += len(batch)
        # messages are cut while batches still arrive, as the sender does
        if i % take_every == 0 and (m := box.take()) is not None:
            messages.append(m)
    while (m := box.take()) is not None:
        messages.append(m)
    assert box.events == 0
    assert b"".join(bytes(m.payload) for m in messages) == b"".join(sent)
    first = 0
    for m in messages:
        lines = bytes(m.payload).split(b"\n")[:-1]
        assert m.count == len(lines) >= 1
        assert m.count <= max_events
        assert len(m.payload) <= max_bytes or m.count == 1
        seqs = [json.loads(ln)["seq"] for ln in lines]
        assert seqs == list(range(first, first + m.count))
        assert m.msg_id == f"h.r.{seqs[0]}.{seqs[-1]}"
        first += m.count
    assert first == seq


def test_line_without_seq_gets_a_counter_id() -> None:
    box = Outbox("h.r", 1000, 10)
    box.add(b'{"x":1}\n{"x":2}\n', 2)
    m = box.take()
    assert m is not None and m.count == 2 and m.msg_id == "h.r.m1"
    assert box.take() is None


def test_consume_puts_the_host_first() -> None:
    data = line(1, 3) + line(2, 0)
    out = with_host(data, "web-1")
    assert [json.loads(x) for x in out.splitlines()] == [
        {"host": "web-1", "seq": 1, "pid": 7, "name": "xxx"},
        {"host": "web-1", "seq": 2, "pid": 7, "name": ""}]
    assert with_host(data, 'bad"host') == data
    assert with_host(data, "") == data
