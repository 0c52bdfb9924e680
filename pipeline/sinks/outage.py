"""What the sinks that send over a network link share while the link comes and goes: a
bounded buffer of events whose overflow is counted as dropped, a sender task that
reconnects with capped, jittered exponential backoff, and a close bounded by
`close_timeout`. A subclass supplies the link (`_send_loop`) and what it keeps buffered;
its options must include buffer_events, backoff_initial, backoff_max and close_timeout.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import random
from typing import Any

from pipeline.sinks.base import Batch, Sink


class OutageSink(Sink):
    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._held = 0  # events buffered or in flight, bounded by buffer_events
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def admit(self, batch: Batch) -> bool:
        """True when the caller should buffer `batch` (then counted as held); False when it
        needs no work or does not fit, which is counted as dropped here."""
        if self.skip(batch):
            return False
        if self._held + batch.count > self.config["buffer_events"]:
            self.stats.drop("buffer_overflow", batch.count)
            return False
        self._held += batch.count
        self._wake.set()
        return True

    def start_sender(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"sink-{self.name}")

    async def stop_sender(self) -> None:
        """Ask the sender to flush and end; after close_timeout it is cancelled. What is
        still held afterwards is the caller's to count as dropped."""
        self._closing = True
        self._wake.set()
        if self._task is None:
            return
        done, _ = await asyncio.wait({self._task}, timeout=self.config["close_timeout"])
        if not done:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def drop_held(self, reason: str) -> None:
        """Count everything still held as dropped: for `reason`, or write_failed when the
        sink failed for good."""
        self.stats.drop(reason if self.stats.failed is None else "write_failed", self._held)
        self._held = 0

    def backoff(self, attempt: int) -> float:
        # The exponent is capped: 2.0**1100 overflows, and a long outage reaches that.
        delay = min(self.config["backoff_max"],
                    self.config["backoff_initial"] * 2.0 ** min(attempt, 60))
        # Jitter: a fleet does not come back to a restarted server in the same instant.
        return float(delay * random.uniform(0.5, 1.0))

    async def _run(self) -> None:
        try:
            await self._send_loop()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug must not leave events unaccounted or hang close()
            self.fail(f"internal error in the sender: {e!r}; later events are counted as dropped")

    @abc.abstractmethod
    async def _send_loop(self) -> None:
        """Connect, send what is held, reconnect after a loss; return once closing and
        nothing is held."""
