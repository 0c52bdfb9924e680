"""The asyncio reader: drains the arena queue in batches through the C
extension (GIL released), fans each batch out to every sink, naps between the
drains of a steady trickle, and sleeps on the doorbell when the queue stays
empty past a short spin window.

A nap (after a drain that emptied the queue without filling a batch) waits for
nap_us on a timer, and for the doorbell, which producers ring only once the
queue holds a nap threshold of events (a batch, or half the queue if that is
smaller): a slow, steady producer is read in batches a nap apart, neither
polled for continuously nor rung for every event, and a burst during a nap
wakes the reader before the queue can fill. An event waits at most one nap
(plus the event loop's timer slack, about a millisecond) before its drain
starts; with the queue idle the reader sleeps, and the first event rings."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from .sinks.base import Batch, Sink


@dataclass
class ReaderStats:
    read: int = 0  # events taken off the queue
    batches: int = 0
    sleeps: int = 0
    naps: int = 0
    left_in_queue: int = 0  # events not read because --max-events was reached
    extra: dict[str, Any] = field(default_factory=dict)


class Reader:
    def __init__(self, session: Any, sinks: list[Sink], *, batch: int, spin_us: int,
                 nap_us: int = 0, max_events: int = 0, cgroups: Any = None) -> None:
        self.session = session
        # pipeline.cgroups.Cgroups: fills the drain's cgroup table when a drain stops
        # at a record whose cgroup it lacks
        self.cgroups = cgroups
        self.sinks = sinks
        self.batch = batch
        self.spin_ns = spin_us * 1000
        self.nap_s = nap_us / 1e6
        # producers ring a nap when the queue holds this many events: a batch to read, and
        # at most half the queue, so that the wake-up has the other half to arrive in
        self.nap_threshold = max(1, min(batch, int(session.stats()["capacity"]) // 2))
        self.max_events = max_events
        self.stats = ReaderStats()
        self.stopping = asyncio.Event()
        # Set when the run stopped because no sink could take events any more.
        self.all_sinks_failed = False
        for s in sinks:
            s.on_fail = self._sink_failed
        # CLOCK_MONOTONIC (the kernel's bpf_ktime_get_ns) to wall time
        self.wall_offset_ns = time.time_ns() - time.monotonic_ns()
        self._bell = asyncio.Event()
        self._emptied = False
        self._bell_timeout: float | None = None
        from . import _core

        self._core = _core

    def stop(self) -> None:
        self.stopping.set()

    def _sink_failed(self, _sink: Sink) -> None:
        self._check_sinks()

    def _check_sinks(self) -> None:
        # A sink that is reconnecting has not failed: only `stats.failed` (for good) counts.
        if all(s.stats.failed is not None for s in self.sinks):
            self.all_sinks_failed = True
            self.stop()

    def _limit(self) -> int:
        if not self.max_events:
            return self.batch
        return min(self.batch, self.max_events - self.stats.read)

    async def _deliver(self, data: bytes, count: int) -> None:
        self.stats.read += count
        self.stats.batches += 1
        b = Batch(data, count)
        if len(self.sinks) == 1:
            # gather() would wrap the one write in a task: a loop turn per batch for nothing
            await self.sinks[0].write(b)
        else:
            await asyncio.gather(*(s.write(b) for s in self.sinks))

    def _drain_once(self) -> tuple[bytes, int]:
        limit = self._limit()
        if limit <= 0:
            return b"", 0
        data, n = self.session.drain_json(limit, self.wall_offset_ns)
        return data, int(n)

    async def _next_batch(self) -> tuple[bytes, int]:
        """_drain_once, and when the drain stopped at a record of a cgroup the table lacks
        (only a short batch can have), that cgroup put in before the next drain. Sets
        _emptied when the batch is short because the drain found no more records."""
        limit = self._limit()
        data, n = self._drain_once()
        self._emptied = n < limit
        if self.cgroups is not None and n < limit:
            miss = self.session.cgroup_miss()
            if miss:
                self._emptied = False
                await self.cgroups.resolve(miss)
                if not n:
                    data, n = self._drain_once()
                    self._emptied = n < limit and not self.session.cgroup_miss()
        return data, n

    async def _grace_period(self) -> bool:
        """Announce sleep and wait out a grace period (evq.h, "Doorbell"),
        polling the queue meanwhile; False when an event arrived."""
        self.session.announce_sleep()
        loop = asyncio.get_running_loop()
        gp = loop.run_in_executor(None, self._core.grace_period)
        while not gp.done():
            if self.session.ready() or self.stopping.is_set():
                self.session.cancel_sleep()
                return False
            await asyncio.wait({gp}, timeout=0.001)
        if not gp.result():
            # no membarrier(): sleep in short slices instead of for good
            self._bell_timeout = 0.01
        return bool(self.session.may_sleep())

    async def _sleep_until_bell(self) -> None:
        self._bell.clear()
        if not await self._grace_period():
            return  # something was published meanwhile
        self.stats.sleeps += 1
        await self._wait_bell(self._bell_timeout)

    async def _nap(self) -> None:
        """Wait nap_s, or until the queue holds nap_threshold events (the doorbell)."""
        self._bell.clear()
        self.session.nap(self.nap_threshold)
        self.stats.naps += 1
        await self._wait_bell(self.nap_s)

    async def _wait_bell(self, timeout: float | None) -> None:
        """Wait for the doorbell, a stop or the timeout, then withdraw the announcement."""
        bell = asyncio.ensure_future(self._bell.wait())
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({bell, stop}, timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            bell.cancel()
            stop.cancel()
        self.session.cancel_sleep()

    def _on_bell(self) -> None:
        # Consume at once: the ring buffer's fd stays readable while a record
        # is in it, and a stale ring (one that came while the reader was
        # withdrawing its announcement) would make every loop turn return
        # at once, spinning the loop.
        self.session.consume_doorbell()
        self._bell.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        fd = self.session.doorbell_fd()
        loop.add_reader(fd, self._on_bell)
        try:
            await self._loop()
        finally:
            loop.remove_reader(fd)

    async def _loop(self) -> None:
        # A plugin may set stats.failed without fail(), and a sink may have failed before
        # the reader hooked on_fail: look once here, and after every batch.
        self._check_sinks()
        while not self.stopping.is_set():
            if self.max_events and self.stats.read >= self.max_events:
                break
            data, n = await self._next_batch()
            if n:
                await self._deliver(data, n)
                self._check_sinks()
                # a short batch that emptied the queue: a trickle, read a nap apart
                if self.nap_s and self._emptied and not self.stopping.is_set():
                    await self._nap()
                continue
            # Spin window: events often come in bursts; polling briefly is
            # cheaper than a sleep/wakeup round trip. Yield to the loop so
            # sinks keep running.
            deadline = time.monotonic_ns() + self.spin_ns
            while not n and time.monotonic_ns() < deadline and not self.stopping.is_set():
                await asyncio.sleep(0)
                data, n = await self._next_batch()
            if n:
                await self._deliver(data, n)
                continue
            if not self.stopping.is_set():
                await self._sleep_until_bell()

    async def drain_rest(self, timeout: float = 2.0) -> None:
        """After the producers are detached: read what is left, including
        events whose producer was still finishing when we detached."""
        deadline = time.monotonic() + timeout
        while True:
            if self.max_events and self.stats.read >= self.max_events:
                st = self.session.stats()
                self.stats.left_in_queue = int(st["queued"])
                return
            data, n = await self._next_batch()
            if n:
                await self._deliver(data, n)
                continue
            st = self.session.stats()
            settled = st["produced"] == st["reserved"] + st["dropped_full"] + st["dropped_busy"]
            if (st["queued"] == 0 and settled) or time.monotonic() > deadline:
                self.stats.left_in_queue = int(st["queued"])
                return
            await asyncio.sleep(0.001)

    async def close_sinks(self) -> None:
        for s in self.sinks:
            with contextlib.suppress(Exception):
                await s.close()
