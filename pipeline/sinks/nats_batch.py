"""Cutting the reader's batches into NATS messages.

A message is a run of whole JSON lines, at most `max_events` of them and at most `max_bytes`
long. Its boundaries are fixed the moment it is cut, and it keeps them for good: a message
sent again after a reconnection is the same message with the same de-duplication id (host,
run, first and last event sequence numbers), so the stream stores it once.

Events wait here uncut while every in-flight slot is taken, so the next message cut takes
all that has piled up (up to the limits): a busy pipeline sends few large messages, an idle
one sends each event soon.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

_SEQ = b'{"seq":'


@dataclass(frozen=True)
class Message:
    payload: bytes | memoryview  # a view into one reader batch, or the pieces joined
    count: int
    msg_id: str


def _seq_at(data: bytes, pos: int) -> int | None:
    """The seq field of the line starting at `pos` (the formatter puts it first)."""
    if not data.startswith(_SEQ, pos):
        return None
    end = data.find(b",", pos + len(_SEQ), pos + len(_SEQ) + 24)
    digits = data[pos + len(_SEQ):end]
    return int(digits) if end > 0 and digits.isdigit() else None


class Outbox:
    """Whole lines not yet cut into messages, oldest first."""

    def __init__(self, id_prefix: str, max_bytes: int, max_events: int) -> None:
        self.id_prefix = id_prefix
        self.max_bytes = max_bytes
        self.max_events = max_events
        self.events = 0
        self._parts: collections.deque[tuple[bytes, int, int]] = collections.deque()  # data,
        # offset of the first line not taken, lines left
        self._cut = 0  # messages cut, for ids of lines without a seq field

    def add(self, data: bytes, count: int) -> None:
        if count > 0:
            self._parts.append((data, 0, count))
            self.events += count

    def clear(self) -> int:
        n = self.events
        self._parts.clear()
        self.events = 0
        return n

    def take(self) -> Message | None:
        """The next message, or None when nothing is waiting. A single line longer than
        max_bytes becomes a message of its own (the server refuses it; the sink counts it)."""
        if not self._parts:
            return None
        pieces: list[bytes | memoryview] = []
        size = events = 0
        first: int | None = None
        last_data, last_start = b"", 0
        while self._parts and events < self.max_events:
            data, off, left = self._parts[0]
            room_b = self.max_bytes - size
            room_e = self.max_events - events
            if room_b <= 0:  # an oversized line filled it
                break
            end, n = len(data), left
            if left > room_e or end - off > room_b:
                # Cut where room_e lines of the batch's average length would end (within
                # room_b), at a line's end; then count: searches in C, not a loop per line.
                span = min(room_b, (len(data) - off) * room_e // left + 1)
                end = data.rfind(b"\n", off, off + span) + 1
                if end <= off:  # not even one more line fits there
                    if events and span == room_b:
                        break
                    end = data.index(b"\n", off) + 1
                n = data.count(b"\n", off, end)
                while n > room_e:  # longer lines ahead than the average: step back
                    end = data.rfind(b"\n", off, end - 1) + 1
                    n -= 1
                if end - off > room_b and events:  # one line over the limit: alone
                    break
            if first is None:
                first = _seq_at(data, off)
            last_data, last_start = data, data.rfind(b"\n", off, end - 1) + 1 or off
            # a view, not a copy: the client copies the payload into its command anyway
            pieces.append(data if off == 0 and end == len(data) else memoryview(data)[off:end])
            size += end - off
            events += n
            if end == len(data):
                self._parts.popleft()
            else:
                self._parts[0] = (data, end, left - n)
        self.events -= events
        self._cut += 1
        last = _seq_at(last_data, last_start)
        if first is None or last is None:
            msg_id = f"{self.id_prefix}.m{self._cut}"
        else:
            msg_id = f"{self.id_prefix}.{first}.{last}"
        payload = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        return Message(payload, events, msg_id)
