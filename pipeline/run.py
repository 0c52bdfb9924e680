"""One pipeline run: start the sinks, load and attach the BPF side, read until
told to stop, then drain, flush and report."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from typing import TYPE_CHECKING, Any

import orjson

from .cgroups import Cgroups
from .config import Config
from .errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_SINKS_FAILED, KernelError
from .filters import Filters
from .kernel import Kernel, check_kernel, ensure_mounts
from .log import RESULT, get
from .pins import PinRoot, RunDir
from .reader import Reader
from .sinks.base import Sink, SinkError
from .sinks.registry import get_sink_class

if TYPE_CHECKING:
    from .metrics import Endpoint

log = get(__name__)


def build_sinks(cfg: Config) -> list[Sink]:
    sinks: list[Sink] = []
    # options of sinks not in use are checked too: a typo there is still a typo
    for name, raw in cfg.sink_options.items():
        if name not in cfg.sinks:
            get_sink_class(name).validate_options(raw)
    for name in cfg.sinks:
        cls = get_sink_class(name)
        opts = cls.validate_options(cfg.sink_options.get(name, {}))
        sinks.append(cls.create(**opts))
    return sinks


def final_stats(kernel: Kernel, reader: Reader,
                st: dict[str, int] | None = None,
                filters: Filters | None = None) -> dict[str, Any]:
    """The run's statistics; `st`: the session's counters when the caller has read them
    already (reading them walks the arena's pages for its resident size)."""
    if st is None:
        st = kernel.session.stats()
    sinks = {s.name: s.stats.as_dict() for s in reader.sinks}
    dropped: dict[str, int] = {
        "kernel_queue_full": int(st["dropped_full"]),
        "kernel_queue_busy": int(st["dropped_busy"]),
    }
    if reader.stats.left_in_queue:
        dropped["left_in_queue"] = reader.stats.left_in_queue
    out: dict[str, Any] = {
        "produced": int(st["produced"]),
        "read": reader.stats.read,
        "dropped": dropped,
        "sinks": sinks,
        "queue_high_water": int(st["high_water"]),
        "queue_capacity": int(st["capacity"]),
        "arena_resident_bytes": int(st["arena_resident_bytes"]),
        "arena": arena_stats(kernel, st),
        "wakeups": int(st["wakeups"]),
        "sleeps": reader.stats.sleeps,
        "naps": reader.stats.naps,
        "batches": reader.stats.batches,
    }
    if reader.cgroups is not None:
        out["cgroups"] = reader.cgroups.stats()
    if filters is not None and (filters.generation or filters.reloads):
        out["filters"] = filters.stats()
    with contextlib.suppress(ValueError):
        counts = kernel.session.proc_counts()
        if counts["table"]:
            out["process_table"] = {k: v for k, v in counts.items() if k != "table"}
    return out


def arena_stats(kernel: Kernel, st: dict[str, int]) -> dict[str, int]:
    """How the one arena's pages are used: the queue (root and slots) and the
    data-structure space beside it, with its allocator's counters."""
    out = {"pages": int(st["arena_pages"]), "queue_pages": int(st["arena_queue_pages"]),
           "ds_pages": int(st["arena_ds_pages"])}
    try:
        heap = kernel.arena().heap_stats()
    except (KernelError, ValueError):
        return out  # the session is closed or has no space: its share of the figures only
    for key in ("pages_populated", "pages_in_use", "bytes_in_use", "free_pages", "pool_pages",
                "pages_returned", "failures"):
        out[f"ds_{key}"] = int(heap[key])
    return out


def exit_status(reader: Reader) -> int:
    """0 for a run stopped as asked, or whose every sink lost its reader (`| head`);
    1 when the run ended itself because every sink failed and one of them for an error."""
    if reader.all_sinks_failed and not all(s.reader_gone for s in reader.sinks):
        return EXIT_SINKS_FAILED
    return EXIT_OK


def _print_stats(kind: str, stats: dict[str, Any]) -> None:
    log.log(RESULT, "%s %s", kind, orjson.dumps(stats).decode())


async def _periodic_stats(kernel: Kernel, reader: Reader, every: float,
                          filters: Filters | None = None) -> None:
    while True:
        await asyncio.sleep(every)
        _print_stats("stats", final_stats(kernel, reader, filters=filters))


async def _process_table(kernel: Kernel, run_dir: RunDir) -> asyncio.Future[None]:
    """Attach the process table's tracepoints, then seed it from /proc with a pool of
    workers attached through the run's pins (tasks that fork from now on are the
    kernel's). Returns the task that keeps the tracepoints' page pools filled."""
    from . import _core
    from .proctab import keep_pools_filled, pool_seed

    try:
        kernel.session.attach_proctab()
    except _core.CoreError as e:
        raise KernelError(str(e.args[1] if len(e.args) > 1 else e)) from None
    seeded = await asyncio.get_running_loop().run_in_executor(None, pool_seed, run_dir.path)
    log.info("process table: %d tasks seeded from /proc (%d already in it, %d without memory)",
             *seeded)
    return asyncio.ensure_future(keep_pools_filled(kernel.arena(),
                                                   reap=kernel.session.proc_reap))


async def _run(cfg: Config, sinks: list[Sink], pins: PinRoot, t0: float,
               metrics: Endpoint | None = None, filters: Filters | None = None) -> int:
    loop = asyncio.get_running_loop()
    started: list[Sink] = []
    kernel: Kernel | None = None
    run_dir: RunDir | None = None
    cgroups: Cgroups | None = None
    refiller: asyncio.Future[None] | None = None
    try:
        for s in sinks:
            await s.start()
            started.append(s)
        kernel = Kernel(cfg.arena_pages, cfg.queue_capacity, cfg.verbose)
        attached = kernel.attach(cfg.trigger)
        log.info("trigger: %s (%s)", attached.trigger, attached.reason)
        kernel.session.set_filter(pid=cfg.filter_pid, comm=cfg.filter_comm or None,
                                  ignore_pid=os.getpid() if cfg.ignore_self else 0)
        if filters is not None:
            filters.session = kernel.session
            filters.start()
        pins.clean_stale(log.warning)
        run_dir = pins.make_run_dir()
        kernel.pin(run_dir)
        cgroups = Cgroups.open(kernel.session)
        arena = kernel.arena()
        for s in sinks:
            s.use_arena(arena)
        if cfg.process_table:
            refiller = await _process_table(kernel, run_dir)
            if cfg.ancestors:
                kernel.session.set_ancestors(cfg.ancestors)
        reader = Reader(kernel.session, sinks, batch=cfg.batch, spin_us=cfg.spin_us,
                        nap_us=cfg.nap_us, max_events=cfg.max_events, cgroups=cgroups)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, reader.stop)
        if filters is not None:
            loop.add_signal_handler(signal.SIGHUP, filters.reload)
        if cfg.duration:
            loop.call_later(cfg.duration, reader.stop)
        if metrics:
            k, r, fl = kernel, reader, filters
            await metrics.attach(k.session, sinks, attached.trigger,
                                 lambda st: final_stats(k, r, st, fl))
        kernel.session.enable(True)
        log.info("ready in %.3fs: sinks %s; pins %s", time.monotonic() - t0,
                 ", ".join(cfg.sinks), kernel.pin_path)
        ticker = (asyncio.ensure_future(_periodic_stats(kernel, reader, cfg.stats, filters))
                  if cfg.stats else None)
        await reader.run()
        if metrics:
            metrics.stopped()
        if reader.all_sinks_failed:
            log.warning("every sink has failed; stopping (events still in the queue are "
                        "counted as dropped at the sinks)")
        # stop producing, then take what is already in the queue
        kernel.session.detach()
        if refiller:
            refiller.cancel()
        await reader.drain_rest()
        if ticker:
            ticker.cancel()
        await reader.close_sinks()
        started.clear()
        final = final_stats(kernel, reader, filters=filters)
        _print_stats("final", final)
        if metrics:
            await metrics.linger(final)
        return exit_status(reader)
    except SinkError as e:
        log.error("%s", e)
        return EXIT_BAD_INPUT
    finally:
        if refiller:
            refiller.cancel()
        if metrics:
            await metrics.close()
        for s in started:
            with contextlib.suppress(Exception):
                await s.close()
        if kernel:
            kernel.close()
        if cgroups:
            cgroups.close()
        if run_dir:
            problem = run_dir.remove()
            if problem:
                log.warning("%s", problem)


def _filters(cfg: Config, config_path: str | None,
             fixed: dict[str, Any] | None) -> Filters:
    """The run's filters, checked now (a bad value is exit 2 before anything is captured);
    the session is bound when the kernel side is up."""
    from .config import load_file
    from .filters import resolve

    resolve(cfg)
    file_cfg = load_file(config_path, Config()) if config_path else None
    return Filters(session=None, cfg=cfg, config_path=config_path, fixed=dict(fixed or {}),
                   file_cfg=file_cfg)


def run_pipeline(cfg: Config, config_path: str | None = None,
                 fixed_filters: dict[str, Any] | None = None) -> int:
    t0 = time.monotonic()
    filters = _filters(cfg, config_path, fixed_filters)
    sinks = build_sinks(cfg)
    check_kernel()
    ensure_mounts()
    metrics = None
    if cfg.metrics:
        # bound before anything is captured or created: a port in use is bad input
        from .metrics import Endpoint

        metrics = Endpoint.open(cfg)
    # before the sinks create anything: a bad pin_dir leaves the disk as it was
    pins = PinRoot.open(cfg.pin_dir)
    try:
        import uvloop
        runner: Any = uvloop.run
    except ImportError:  # uvloop is optional: plain asyncio works too
        runner = asyncio.run
    with pins:
        return int(runner(_run(cfg, sinks, pins, t0, metrics, filters)))
