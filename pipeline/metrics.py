"""The pipeline's counters for Prometheus (`--metrics HOST:PORT`, docs/metrics.md).

A custom collector reads the live figures when a scraper asks, from the same places the
statistics lines read them (`final_stats()`: the kernel queue's counters in the arena, the
reader's and each sink's own counters), plus a few figures only a scrape shows: the queue's
depth, the age of its oldest event, the arena's size, the BPF programs' run statistics.
Nothing is counted twice and nothing is done per event: between scrapes this module costs
the pipeline nothing. Once the run has stopped, the figures are frozen at the final
statistics the run printed, so a last scrape reads exactly those.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from .config import Config
from .errors import PipelineError
from .log import get
from .metrics_http import MetricsServer, bind, parse_listen
from .version import version

log = get(__name__)

PREFIX = "arena_pipeline_"
PAGE_SIZE = 4096
BPF_STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"
# the final statistics' drop reasons that happen in the kernel; the rest are the reader's
KERNEL_DROPS = ("kernel_queue_full", "kernel_queue_busy")


@dataclass
class Figures:
    """One reading of everything a scrape shows."""

    stats: dict[str, Any]  # as final_stats() returns it
    queued: int  # events in the queue now
    arena_pages: int
    oldest_age_s: float  # age of the oldest event in the queue; 0 when none
    bpf_stats: bool  # the kernel counts programs' run time
    progs: list[tuple[str, int, int, int]]  # (name, id, run_time_ns, run_cnt)
    healthy: bool
    health: str


def bpf_stats_sysctl() -> bool:
    try:
        with open(BPF_STATS_SYSCTL, "rb") as f:
            return f.read().strip() not in (b"", b"0")
    except OSError:
        return False


class Endpoint:
    """The metrics endpoint of one run: live figures while the reader runs, then the
    final statistics. run.py wires it: `open` before anything is captured (binds the
    port), `attach` once the reader exists (starts serving), `stopped` when the reader
    loop returns, `linger` with the final statistics, `close` at the end."""

    @classmethod
    def open(cls, cfg: Config) -> Endpoint:
        """Bind cfg.metrics and, with metrics_bpf_stats, turn the kernel's BPF run-time
        statistics on for as long as the run lasts; PipelineError (one line) if either
        cannot be done."""
        addr = parse_listen(cfg.metrics)
        sock = bind(addr)
        fd = None
        if cfg.metrics_bpf_stats:
            from . import _core

            try:
                fd = _core.enable_bpf_stats()
            except _core.CoreError as e:
                sock.close()
                raise PipelineError(f"metrics_bpf_stats: {e.args[-1]}; leave it out, or set "
                                    "the sysctl kernel.bpf_stats_enabled=1 yourself") from None
        ep = cls(fd)
        ep.server = MetricsServer(sock, ep.render, ep.health)
        ep.addr = str(addr)
        ep.linger_s = cfg.metrics_linger
        return ep

    def __init__(self, own_bpf_stats_fd: int | None = None) -> None:
        self.server: MetricsServer | None = None
        self.addr = ""
        self.linger_s = 0.0
        self.session: Any = None
        self.sinks: list[Any] = []
        # final_stats() over counters the session has given already
        self.stats_fn: Callable[[dict[str, int]], dict[str, Any]] | None = None
        self.own_bpf_stats_fd = own_bpf_stats_fd
        self.info: dict[str, str] = {"version": version(), "kernel": os.uname().release,
                                     "trigger": ""}
        self.running = False
        self.frozen: Figures | None = None
        self.registry = CollectorRegistry()
        self.registry.register(PipelineCollector(self))
        # process_* under its usual names: dashboards know them
        ProcessCollector(registry=self.registry)

    async def attach(self, session: Any, sinks: list[Any], trigger: str,
                     stats_fn: Callable[[dict[str, int]], dict[str, Any]]) -> None:
        """Show this run's figures from now on, and start serving."""
        self.session, self.sinks, self.stats_fn = session, sinks, stats_fn
        self.info["trigger"] = trigger
        self.running = True
        if self.server is not None:
            await self.server.start()
            log.info("metrics: http://%s/metrics and /healthz", self.addr)

    def stopped(self) -> None:
        self.running = False

    def freeze(self, final: dict[str, Any]) -> None:
        """From now on serve `final` (the printed final statistics) and what the
        session shows at this moment."""
        self.frozen = self._read(final)

    async def linger(self, final: dict[str, Any]) -> None:
        """Freeze at `final`, then keep serving for metrics_linger seconds, or until
        SIGINT or SIGTERM, so that a last scrape reads the run's final figures."""
        self.freeze(final)
        if not self.linger_s or self.server is None:
            return
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, done.set)
        log.info("metrics: serving the final figures for %gs (SIGINT or SIGTERM ends it)",
                 self.linger_s)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(done.wait(), self.linger_s)

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None
        if self.own_bpf_stats_fd is not None:
            os.close(self.own_bpf_stats_fd)
            self.own_bpf_stats_fd = None

    def health(self) -> tuple[bool, str]:
        if self.frozen is not None:
            return self.frozen.healthy, self.frozen.health
        return self._health()

    def _health(self) -> tuple[bool, str]:
        failed = [s for s in self.sinks if s.stats.failed is not None]
        if self.sinks and len(failed) == len(self.sinks):
            why = "; ".join(f"{s.name}: {s.stats.failed}" for s in failed)
            return False, f"unhealthy: every sink has failed ({why})"
        if not self.running:
            return False, "unhealthy: the reader is not running (starting or stopped)"
        return True, "ok"

    def figures(self) -> Figures:
        return self.frozen if self.frozen is not None else self._read(None)

    def _read(self, final: dict[str, Any] | None) -> Figures:
        assert self.stats_fn is not None and self.session is not None
        st = self.session.stats()  # once: it walks the arena's pages
        stats = final if final is not None else self.stats_fn(st)
        oldest = self.session.oldest_ts()
        # read after the stamp: both are CLOCK_MONOTONIC, so the difference is >= 0
        age = max(0, time.monotonic_ns() - oldest) / 1e9 if oldest else 0.0
        on = self.own_bpf_stats_fd is not None or bpf_stats_sysctl()
        ok, why = self._health()
        return Figures(stats=stats, queued=int(st["queued"]), arena_pages=int(st["arena_pages"]),
                       oldest_age_s=age, bpf_stats=on,
                       progs=self.session.prog_stats() if on else [], healthy=ok, health=why)

    def render(self, accept: str) -> tuple[bytes, str]:
        """The exposition in the format the scraper's Accept header asks for: OpenMetrics
        when it says so (Prometheus does), else the classic text format 0.0.4."""
        encode, ctype = choose_encoder(accept)
        return encode(self.registry), ctype


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, value=value)


# how a cgroup id lookup by handle ended (pipeline/cgroups.py, Counters): each is exactly one
CGROUP_LOOKUP_RESULTS = ("found", "gone", "unverified")


def _cgroups(cg: dict[str, Any]) -> Iterator[Metric]:
    """The drain's cgroup table (id -> path) and how its ids were resolved: the final
    statistics' `cgroups` object."""
    mode = GaugeMetricFamily(PREFIX + "cgroup_resolve_mode", "1 for how cgroup ids are "
                             "resolved: handle (each id opened by its file handle) or walk "
                             "(the cgroup2 tree walked)", labels=["mode"])
    mode.add_metric([cg["mode"]], 1)
    yield mode
    lookups = CounterMetricFamily(PREFIX + "cgroup_lookups", "cgroup ids opened by handle, by "
                                  "result: found (path verified), gone (the cgroup no longer "
                                  "exists), unverified (opened, but its path did not check "
                                  "out)", labels=["result"])
    for result in CGROUP_LOOKUP_RESULTS:
        lookups.add_metric([result], cg[result])
    yield lookups
    yield _counter("cgroup_walks", "walks of the whole cgroup2 tree (mode walk only)",
                   cg["walks"])
    yield _gauge("cgroup_table_entries", "cgroup ids in the drain's table now", cg["table"])
    yield _counter("cgroup_table_evictions", "ids the full table evicted to make room",
                   cg["evicted"])


class PipelineCollector(Collector):
    """Turns one Figures reading into metric families, named in Prometheus' conventions:
    one prefix, base units (seconds, bytes), `_total` on counters."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    def collect(self) -> Iterator[Metric]:
        ep = self.endpoint
        if ep.session is None:  # not attached yet: the build is all there is to show
            yield InfoMetricFamily(PREFIX + "build", "version, kernel release and trigger",
                                   value=ep.info)
            return
        f = ep.figures()
        s = f.stats
        yield InfoMetricFamily(PREFIX + "build", "version, kernel release and trigger",
                               value=ep.info)
        yield _counter("events_produced", "events the kernel saw (each took a sequence "
                       "number), delivered or dropped", s["produced"])
        yield _counter("events_read", "events the reader took off the queue", s["read"])
        delivered = CounterMetricFamily(PREFIX + "events_delivered",
                                        "events each sink handed on", labels=["sink"])
        dropped = CounterMetricFamily(
            PREFIX + "events_dropped", "events dropped, by place (kernel, reader, sink), "
            "the sink's name for place=sink, and reason", labels=["place", "sink", "reason"])
        failed = GaugeMetricFamily(PREFIX + "sink_failed", "1 once the sink has failed for "
                                   "good", labels=["sink"])
        for reason, n in s["dropped"].items():
            place = "kernel" if reason in KERNEL_DROPS else "reader"
            dropped.add_metric([place, "", reason], n)
        for name, ss in s["sinks"].items():
            delivered.add_metric([name], ss["delivered"])
            failed.add_metric([name], 0 if ss["failed"] is None else 1)
            for reason, n in ss["dropped"].items():
                dropped.add_metric(["sink", name, reason], n)
        yield delivered
        yield dropped
        yield failed
        yield _gauge("queue_events", "events in the kernel queue now", f.queued)
        yield _gauge("queue_high_water_events", "most events the queue has held at once",
                     s["queue_high_water"])
        yield _gauge("queue_capacity_events", "the queue's size", s["queue_capacity"])
        yield _gauge("reader_lag_seconds", "age of the oldest event waiting in the queue "
                     "(0 when it is empty)", f.oldest_age_s)
        yield _gauge("arena_resident_bytes", "arena memory backed by pages now",
                     s["arena_resident_bytes"])
        yield _gauge("arena_size_bytes", "the arena's size (4 KiB pages it may use)",
                     f.arena_pages * PAGE_SIZE)
        yield _counter("reader_batches", "batches the reader took off the queue", s["batches"])
        yield _counter("reader_sleeps", "times the reader slept on the doorbell", s["sleeps"])
        yield _counter("reader_naps", "times the reader napped between the drains of a "
                       "trickle", s["naps"])
        yield _counter("doorbell_wakeups", "times a producer rang the sleeping reader",
                       s["wakeups"])
        if "filters" in s:
            fs = s["filters"]
            yield _gauge("filter_generation", "the kernel filters' generation in force",
                         fs["generation"])
            yield _counter("filter_reloads", "SIGHUPs that read the config file again",
                           fs["reloads"])
            yield _counter("filter_reload_failures", "reloads that kept the filters in force "
                           "(a file that did not parse, or bad filter values)",
                           fs["reload_failures"])
            yield _counter("filter_unjudged_events", "events let through unjudged: the "
                           "filter tables changed under them too often", fs["unjudged"])
        if "cgroups" in s:
            yield from _cgroups(s["cgroups"])
        yield _gauge("bpf_stats_enabled", "1 when the kernel counts BPF programs' run time "
                     "(kernel.bpf_stats_enabled, or metrics_bpf_stats)", int(f.bpf_stats))
        if f.bpf_stats:
            run_time = CounterMetricFamily(PREFIX + "bpf_prog_run_time_seconds",
                                           "time the kernel spent in the program",
                                           labels=["program"])
            runs = CounterMetricFamily(PREFIX + "bpf_prog_runs", "times the program ran",
                                       labels=["program"])
            for name, _id, ns, cnt in f.progs:
                run_time.add_metric([name], ns / 1e9)
                runs.add_metric([name], cnt)
            yield run_time
            yield runs
        yield _gauge("healthy", "1 when /healthz answers 200", int(f.healthy))
