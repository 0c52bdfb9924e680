"""One stress run: the arena and the structure, the agents, the timed phase, and
what they did gathered for the report and the checks (pipeline.stress_verify).

Keyed structures: user threads draw operations on the shared key space 1..keys
(values equal their keys) and add every successful insert (+1) and delete (-1)
to a per-key counter shared by all of them; kernel threads each work on a key
range of their own above it (ds_run_NAME batches, checked against an exact
model as they go). When a history is recorded, kernel threads work on the
shared keys instead, values equal to keys too, and their records (written by
the BPF program) are what counts their inserts and deletes per key.

Queues and stacks: producers push producer << 40 | sequence, consumers log what
they pop, and once every producer is done the consumers stop at the first empty
answer; the driver pops what is left. Kernel producers and consumers record
their operations when a history is recorded, like the user agents.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import threading
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any

from ._coreerror import CoreError
from .ds import Arena, Structure
from .errors import ConfigError, KernelError
from .kernel import check_privileges, ensure_mounts
from .log import get
from .pins import PinRoot
from .pool import KeyedResult, KeyedTask, QueueResult, QueueTask
from .ranges import STRESS
from .stress_agents import (
    CTL_DEADLINE,
    CTL_DRAIN,
    CTL_GO,
    CTL_SLOT0,
    CTL_STOP,
    NET_OWN_MAX,
    ROLE_CONSUMER,
    ROLE_KEYED,
    ROLE_PRODUCER,
    SLOT_INFLIGHT,
    SLOT_PROGRESS,
    SLOT_STATE,
    SLOT_WORDS,
    KernelAgent,
    KernelHistory,
    ThreadSpec,
    Worker,
    WorkerSpec,
    control_words,
    kernel_consumer,
    kernel_keyed,
    kernel_producer,
    kernel_shared,
    poll,
    start_workers,
)
from .stress_config import StressConfig

log = get(__name__)

INSTANCE = "stress"
KERNEL_PRODUCER_BASE = 1 << 16  # kernel producers' ids; user producers count from 1
DRIVER_AGENT = 0x7FFFFFFF       # history records of the driver (prefill, final drain)
READY_TIMEOUT = 60.0
GRACE = 30.0                    # past the deadline before the driver stops everyone


@dataclass
class Progress:
    ops: int = 0
    seconds: float = 0.0
    bytes_in_use: int = 0


@dataclass
class Outcome:
    """Everything the run produced, before it is checked and reported."""

    cfg: StressConfig
    workers: list[Worker]
    kernel: list[KernelAgent]
    kernel_roles: list[str]
    control: array[int]
    net: array[int] | None
    prefill: list[int]
    final_items: list[tuple[int, int]] = field(default_factory=list)
    drained: array[int] = field(default_factory=lambda: array("Q"))
    drain_history: bytes = b""
    drain_stuck: bool = False  # the final drain gave up on a queue that stayed BUSY
    prefill_history: bytes = b""
    verify: Any = None
    verify_kernel: Any = None
    heap: dict[str, int] = field(default_factory=dict)
    epoch: dict[str, int] = field(default_factory=dict)
    high_water: int = 0
    seconds: float = 0.0
    killed: list[int] = field(default_factory=list)
    timed_out: bool = False
    kernel_history: list[KernelHistory] = field(default_factory=list)


def _seed(seed: int, slot: int) -> int:
    return ((seed * 0x9E3779B97F4A7C15) ^ ((slot + 1) * 0xBF58476D1CE4E5B9)) % (1 << 64) or 1


def _specs(cfg: StressConfig, pin_dir: str) -> list[WorkerSpec]:
    keyed = cfg.meta.keyed
    nproc = cfg.workers + (0 if keyed else cfg.consumers)
    hist_cap = cfg.history_limit if cfg.check_linearizability or cfg.history else 0
    mix = cfg.mix() if keyed else (1, 0, 0)
    specs = []
    for w in range(nproc):
        role = ROLE_KEYED if keyed else ROLE_PRODUCER if w < cfg.workers else ROLE_CONSUMER
        threads = []
        for t in range(cfg.threads):
            slot = w * cfg.threads + t
            producer = 1 + slot if role == ROLE_PRODUCER else 0
            threads.append(ThreadSpec(slot, w * 256 + t, role, _seed(cfg.seed, slot), producer))
        specs.append(WorkerSpec(w, pin_dir, INSTANCE, threads, cfg.operations, mix, cfg.keys,
                                cfg.theta(), hist_cap))
    return specs


def prefill_keys(cfg: StressConfig) -> list[int]:
    """Keys inserted before the run: evenly spread over 1..keys."""
    n = round(cfg.prefill * cfg.keys) if cfg.meta.keyed else 0
    return [1 + (i * cfg.keys) // n for i in range(n)] if n else []


def _hist_records(keys: list[int], t0: int, t1: int) -> bytes:
    """The prefill as history records of the driver (inserts that all completed before
    any agent started)."""
    import struct

    rec = struct.Struct("<QQQQIBBH")
    insert = 1  # DS_OP_INSERT
    return b"".join(rec.pack(t0, t1, k, k, DRIVER_AGENT, insert, 0, 0) for k in keys)


@contextlib.contextmanager
def _arena(cfg: StressConfig) -> Iterator[tuple[Arena, Structure]]:
    try:
        arena = Arena(cfg.pages)
    except CoreError as e:
        if e.args[0] == errno.EINVAL:
            raise ConfigError(f"stress: cannot create an arena of {cfg.pages} pages "
                              f"({e.args[-1]}); set pages within "
                              f"{STRESS['pages'].describe()}") from None
        raise KernelError(f"stress: cannot create the arena: {e.args[-1]}") from None
    with arena:
        try:
            s = arena.create(cfg.structure, cfg.capacity, name=INSTANCE)
        except CoreError as e:
            if e.args[0] == errno.ENOMEM:
                raise ConfigError(f"stress: a {cfg.structure} of capacity {cfg.capacity} does "
                                  f"not fit an arena of {cfg.pages} pages ({e.args[-1]}); raise "
                                  "--pages or lower --capacity") from None
            raise ConfigError(f"stress: {e.args[-1]}; fix --capacity") from None
        yield arena, s


def run(cfg: StressConfig, on_progress: Callable[[Progress], None] | None = None) -> Outcome:
    check_privileges()
    ensure_mounts()
    with PinRoot.open(cfg.pin_dir) as pins, _arena(cfg) as (arena, s):
        pins.clean_stale(lambda msg: log.warning("stress: %s", msg))
        run_dir = pins.make_run_dir()
        try:
            try:
                arena.pin(run_dir.fd_path)
            except OSError as e:
                raise KernelError(f"cannot pin the arena under {run_dir.path}: "
                                  f"{os.strerror(e.errno or 0)}") from None
            out = _drive(cfg, arena, s, run_dir.path, on_progress)
        finally:
            arena.unpin()
            problem = run_dir.remove()
            if problem:
                log.warning("stress: %s", problem)
        if cfg.verify:
            out.final_items = s.items(cap=max(1 << 16, 2 * (cfg.keys * (1 + cfg.kernel_threads))))
            out.verify = s.verify()
            out.verify_kernel = s.verify(kernel=True) if cfg.kernel_threads else None
        arena.synchronize()
        out.heap = arena.heap_stats()
        out.high_water = max(out.high_water, out.heap["bytes_in_use"])
        out.epoch = arena.epoch_stats()
    return out


def _drive(cfg: StressConfig, arena: Arena, s: Structure, pin_dir: str,
           on_progress: Callable[[Progress], None] | None) -> Outcome:
    ctx = get_context("spawn")
    keyed = cfg.meta.keyed
    specs = _specs(cfg, pin_dir)
    slots = sum(len(w.threads) for w in specs)
    control_raw = ctx.RawArray("Q", control_words(slots + 1))
    ctl = memoryview(control_raw).cast("B").cast("Q")
    own = keyed and cfg.keys * slots * 4 <= NET_OWN_MAX
    for spec in specs:
        spec.net_own = own
    net_raw = ctx.RawArray("i", cfg.keys * (slots if own else 1)) if keyed else None
    prefill = prefill_keys(cfg)
    base = array("i", bytes(4 * cfg.keys)) if keyed else None  # the prefill's counts
    t_pre = time.monotonic_ns()
    if prefill:
        b = s.insert_many(array("Q", prefill))
        if b.ok != len(prefill):
            raise ConfigError(f"stress: the prefill of {len(prefill)} keys did not fit the arena "
                              f"({len(prefill) - b.ok} failed); raise --pages or lower --prefill")
        assert base is not None
        for k in prefill:
            base[k - 1] = 1
    out = Outcome(cfg, [], [], [], array("Q"), None, prefill)
    if prefill and (cfg.check_linearizability or cfg.history):
        out.prefill_history = _hist_records(prefill, t_pre, time.monotonic_ns())
    workers = start_workers(specs, control_raw, net_raw)
    out.workers = workers
    stop = threading.Event()   # kernel agents: stop now
    drain = threading.Event()  # kernel consumers: producers are done
    try:
        _wait_ready(workers)
        deadline_s = time.time() + cfg.duration
        ctl[CTL_DEADLINE] = time.monotonic_ns() + int(cfg.duration * 1e9)
        out.kernel, out.kernel_roles, out.kernel_history = _kernel_agents(cfg, s, deadline_s,
                                                                          stop, drain)
        for agent in out.kernel:
            agent.start()
        _kernel_ready(out.kernel)
        ctl[CTL_GO] = 1
        for agent in out.kernel:
            agent.go.set()
        t0 = time.monotonic()
        _monitor(cfg, arena, out, ctl, t0, stop, drain, on_progress)
        out.seconds = time.monotonic() - t0
    except BaseException:
        ctl[CTL_STOP] = 1
        stop.set()
        drain.set()
        for w in workers:
            w.proc.join(5)
            if w.proc.exitcode is None:
                w.proc.kill()
        raise
    finally:
        for w in workers:
            w.proc.join(5)
    _kernel_failed(out.kernel)
    if not keyed:
        _final_drain(cfg, arena, s, ctl, slots, out)
    out.control = array("Q", ctl)
    ctl.release()
    if net_raw is not None and base is not None:
        out.net = _net_total(net_raw, base, cfg.keys, slots if own else 1)
    return out


def _net_total(net_raw: Any, base: array[int], keys: int, arrays: int) -> array[int]:
    """Per key: the prefill's count plus every thread's (or the one shared) counter."""
    nv = memoryview(net_raw).cast("B").cast("i")
    parts = [nv[i * keys:(i + 1) * keys] for i in range(arrays)]
    total = array("i", map(sum, zip(base, *parts, strict=True)))
    for p in parts:
        p.release()
    nv.release()
    return total


def _wait_ready(workers: list[Worker]) -> None:
    t_end = time.monotonic() + READY_TIMEOUT
    while not all(w.ready for w in workers):
        for w in workers:
            poll(w)
            if w.error:
                raise KernelError(f"stress: worker {w.spec.index + 1}: {w.error}")
            if not w.ready and w.proc.exitcode is not None:
                raise KernelError(f"stress: worker {w.spec.index + 1} exited with "
                                  f"{w.proc.exitcode} before it was ready")
        if time.monotonic() > t_end:
            raise KernelError(f"stress: the workers were not ready in {READY_TIMEOUT:.0f} s")
        time.sleep(0.005)


def _kernel_ready(agents: list[KernelAgent]) -> None:
    """Every kernel thread has its buffers, or the run cannot start: the arena is too
    small for them (the structure's prefill took the room)."""
    for a in agents:
        a.ready.wait()
    for i, a in enumerate(agents):
        if a.error is not None:  # the agents left waiting for go are daemon threads
            if isinstance(a.error, OSError) and a.error.errno == errno.ENOMEM:
                raise ConfigError(f"stress: kernel thread {i + 1}: {a.error.strerror}; "
                                  "raise --pages or lower --prefill")
            raise KernelError(f"stress: kernel thread {i + 1}: {a.error}")


def _kernel_failed(agents: list[KernelAgent]) -> None:
    """A kernel thread that raised ends the run with its reason, not with checks that
    would read its missing result."""
    for i, a in enumerate(agents):
        if a.error is not None:
            raise KernelError(f"stress: kernel thread {i + 1}: {a.error}")


def records_history(cfg: StressConfig) -> bool:
    return bool(cfg.check_linearizability or cfg.history)


def _kernel_agents(cfg: StressConfig, s: Structure, deadline: float, stop: threading.Event,
                   drain: threading.Event
                   ) -> tuple[list[KernelAgent], list[str], list[KernelHistory]]:
    """The kernel threads. With a history each gets a KernelHistory (agent index i, the
    same cap as a user thread's), and keyed ones share the user workers' keys."""
    agents: list[KernelAgent] = []
    roles: list[str] = []
    hists: list[KernelHistory] = []
    max_ops = cfg.operations or 10**12
    recording = records_history(cfg)

    def buffers(collect: bool) -> Callable[[], None] | None:
        """The agent thread's arena buffers, taken before the run fills the arena."""
        if not (collect or recording):
            return None
        return lambda: s.kernel_buffers(collect=collect, history=recording)

    def hist(i: int) -> KernelHistory | None:
        if not recording:
            return None
        h = KernelHistory(i, cfg.history_limit)
        hists.append(h)
        return h

    if cfg.meta.keyed:
        for i in range(cfg.kernel_threads):
            lo = 1 if recording else 1 + cfg.keys * (1 + i)
            ktask = KeyedTask(INSTANCE, lo, lo + cfg.keys, cfg.mix(), cfg.batch, deadline,
                              max_ops, _seed(cfg.seed, 10_000 + i))
            h = hist(i)
            if h is not None:
                agents.append(KernelAgent(f"kernel-{i + 1}", kernel_shared, s, ktask, stop, h,
                                          prepare=buffers(False)))
            else:
                agents.append(KernelAgent(f"kernel-{i + 1}", kernel_keyed, s, ktask, stop))
            roles.append("keyed")
        return agents, roles, hists
    for i in range(cfg.kernel_threads):
        task = QueueTask(INSTANCE, KERNEL_PRODUCER_BASE + i, cfg.batch, deadline, max_ops)
        agents.append(KernelAgent(f"kernel-{i + 1}", kernel_producer, s, task, stop, hist(i),
                                  prepare=buffers(False)))
        roles.append("producer")
    for i in range(cfg.kernel_consumers):
        agents.append(KernelAgent(f"kernel-c{i + 1}", kernel_consumer, s, cfg.batch, drain,
                                  hist(cfg.kernel_threads + i), prepare=buffers(True)))
        roles.append("consumer")
    return agents, roles, hists


def _monitor(cfg: StressConfig, arena: Arena, out: Outcome, ctl: memoryview, t0: float,
             stop: threading.Event, drain: threading.Event,
             on_progress: Callable[[Progress], None] | None) -> None:
    """Wait for every agent, showing progress; inject the fault asked for; tell consumers
    when the producers are done; stop everyone if the run overstays."""
    workers = out.workers
    kill = cfg.kill_worker - 1
    hard_end = t0 + cfg.duration + GRACE
    producers = [w for w in workers
                 if w.spec.threads and w.spec.threads[0].role == ROLE_PRODUCER]
    kprod = [k for k, r in zip(out.kernel, out.kernel_roles, strict=True) if r == "producer"]
    while True:
        for w in workers:
            poll(w)
        now = time.monotonic()
        done_ops = sum(ctl[CTL_SLOT0 + t.slot * SLOT_WORDS + SLOT_PROGRESS]
                       for w in workers for t in w.spec.threads)
        done_ops += sum(k.progress[0] for k in out.kernel)
        in_use = arena.heap_stats()["bytes_in_use"]
        out.high_water = max(out.high_water, in_use)
        if on_progress:
            on_progress(Progress(done_ops, now - t0, in_use))
        if kill >= 0 and kill not in out.killed and _halfway(cfg, workers[kill], ctl, now - t0):
            pid = workers[kill].proc.pid
            if pid is not None and workers[kill].proc.exitcode is None:
                os.kill(pid, signal.SIGKILL)
                workers[kill].proc.join(5)
            out.killed.append(kill)
        if not ctl[CTL_DRAIN] and all(w.result is not None or w.dead for w in producers) \
                and not any(k.is_alive() for k in kprod):
            ctl[CTL_DRAIN] = 1
            drain.set()
        if all(w.result is not None or w.dead for w in workers) \
                and not any(k.is_alive() for k in out.kernel):
            break
        if now > hard_end and not out.timed_out:
            log.warning("stress: the run overstayed its duration by %.0f s; stopping every "
                        "agent", GRACE)
            out.timed_out = True
            ctl[CTL_STOP] = 1
            stop.set()
            drain.set()
            hard_end = now + 10.0
        elif now > hard_end:
            for w in workers:
                if w.proc.exitcode is None:
                    w.proc.kill()
        time.sleep(0.02 if now - t0 < 1 else 0.1)
    stop.set()


def _halfway(cfg: StressConfig, w: Worker, ctl: memoryview, elapsed: float) -> bool:
    if elapsed >= cfg.duration / 2:
        return True
    if not cfg.operations:
        return False
    done = sum(ctl[CTL_SLOT0 + t.slot * SLOT_WORDS + SLOT_PROGRESS] for t in w.spec.threads)
    return done * 2 >= cfg.operations * len(w.spec.threads)


def _final_drain(cfg: StressConfig, arena: Arena, s: Structure, ctl: memoryview, slots: int,
                 out: Outcome) -> None:
    """Pop what is left, from the driver, once every agent has stopped (recorded in the
    history like any consumer's pops)."""
    slot = slots  # the spare slot at the end of the control block
    base = CTL_SLOT0 + slot * SLOT_WORDS
    for w in (SLOT_PROGRESS, SLOT_INFLIGHT, SLOT_STATE):
        ctl[base + w] = 0
    ctl[CTL_STOP] = 0
    ctl[CTL_DRAIN] = 1
    ctl[CTL_GO] = 1
    hist_cap = (1 << 24) if cfg.check_linearizability or cfg.history else 0
    r = arena._core.run_loop(s.address, s.meta.id, ctl, slot, role=ROLE_CONSUMER,
                             agent=DRIVER_AGENT, sample_cap=0, hist_cap=hist_cap)
    out.drained.frombytes(r["popped"])
    out.drain_history = r["history"] or b""
    out.drain_stuck = bool(r["stuck"])


def keyed_result_ok(rs: list[KeyedResult]) -> bool:
    return all(r.mismatches == 0 for r in rs)


def queue_results(agents: list[KernelAgent], roles: list[str],
                  role: str) -> list[QueueResult]:
    return [k.result for k, r in zip(agents, roles, strict=True) if r == role]
