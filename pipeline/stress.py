"""`python -m pipeline stress --config configs/stress-hash.toml [--duration S] [--ops N]
[--pin-dir DIR]`

User worker processes (pipeline.pool, attached through pins) and kernel threads
(ds_run_NAME) operate on one structure at once; at the end the structure is
verified and checked exactly against what every agent did:
  - keyed structures: each agent owns a disjoint key range and keeps an exact
    model of it; the final key set (read by iterate) equals the union of the
    models, every value equals its key, verify agrees;
  - queues and stacks: every value pushed is popped exactly once, and for FIFO
    structures each consumer sees each producer's values in order; for LIFO
    structures the final drain, run quiescent, gives each producer's values
    newest first (the one place a stack's order is fixed by sequence alone).
Prints one JSON summary on stdout; exits 1 when an invariant fails, 2 on a bad
config.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import sys
import threading
import time
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ._coreerror import CoreError
from .config import read_toml, shown
from .ds import Arena, Meta, Model, Result, Structure, meta_of
from .errors import ConfigError, KernelError
from .kernel import check_privileges, ensure_mounts
from .log import get
from .pins import DEFAULT_ROOT, PinRoot, RunDir
from .pool import (
    SEQ_BITS,
    KernelThread,
    KeyedResult,
    KeyedTask,
    Pool,
    QueueResult,
    QueueTask,
    consume_until_stopped,
    keyed_kernel,
    keyed_user,
    queue_consumer,
    queue_producer,
)
from .ranges import STRESS, STRESS_MIX_WEIGHT

log = get(__name__)

KERNEL_PRODUCER_BASE = 100  # kernel producers' ids; user producers count from 1


@dataclass
class StressConfig:
    structure: str
    capacity: int = 0
    duration: float = 2.0
    ops: int = 10**12           # per agent: keyed ops, or items per producer
    batch: int = 4096
    user_workers: int = 2       # keyed: agents; queues: producers
    kernel_threads: int = 1     # keyed: agents; queues: producers
    user_consumers: int = 1     # queues only
    kernel_consumers: int = 0   # queues only
    keys_per_agent: int = 65536
    mix: tuple[int, int, int] = (50, 25, 25)  # insert, delete, search
    pages: int = 65536


def load_config(path: str, duration: float | None, ops: int | None) -> StressConfig:
    raw = read_toml(path, "stress config")
    t = raw.get("stress")
    if not isinstance(t, dict):
        raise ConfigError(f"{path}: needs a [stress] table")
    known = set(StressConfig.__dataclass_fields__)
    for k in t:
        if k not in known:
            raise ConfigError(f"{path}: unknown key {shown(k)} in [stress] "
                              f"(known: {', '.join(sorted(known))})")
    if "structure" not in t:
        raise ConfigError(f"{path}: stress.structure is required")
    if not isinstance(t["structure"], str):
        raise ConfigError(f"{path}: stress.structure must be a structure's name "
                          "(python -m pipeline ds list)")
    try:
        meta_of(t["structure"])
    except KeyError as e:
        raise ConfigError(f"{path}: {e.args[0]}") from None
    args: dict[str, Any] = dict(t)
    if "mix" in args:
        m = args["mix"]
        if not isinstance(m, dict) or set(m) - {"insert", "delete", "search"}:
            raise ConfigError(f"{path}: stress.mix is a table of insert, delete, search weights")
        for op, w in m.items():
            problem = STRESS_MIX_WEIGHT(w)
            if problem is not None:
                raise ConfigError(f"{path}: stress.mix.{op} {problem}, not {shown(w)}")
        args["mix"] = (m.get("insert", 0), m.get("delete", 0), m.get("search", 0))
    cfg = StressConfig(**args)
    if duration is not None:
        cfg.duration = duration
    if ops is not None:
        cfg.ops = ops
    _check(path, cfg, meta_of(cfg.structure))
    return cfg


def _check(path: str, c: StressConfig, m: Meta) -> None:
    def bad(msg: str) -> ConfigError:
        return ConfigError(f"{path}: {msg}")

    for name, rng in STRESS.items():
        v = getattr(c, name)
        problem = rng(v)
        if problem is not None:
            raise bad(f"stress.{name} {problem}, not {shown(v)}")
    if not any(c.mix):
        raise bad("stress.mix weights must not all be zero")
    if c.user_workers + c.kernel_threads == 0:
        raise bad("needs at least one user worker or kernel thread")
    if m.keyed:
        if c.keys_per_agent < 1:
            raise bad("stress.keys_per_agent must be at least 1")
        return
    producers, consumers = c.user_workers + c.kernel_threads, c.user_consumers + c.kernel_consumers
    if consumers == 0:
        raise bad(f"{m.name} is a queue: needs user_consumers or kernel_consumers")
    if m.model == Model.SPSC and (producers != 1 or consumers != 1):
        raise bad(f"{m.name} is SPSC: exactly one producer and one consumer")
    if m.model == Model.MPSC and consumers != 1:
        raise bad(f"{m.name} is MPSC: exactly one consumer")


# ---- keyed structures ----

def _keyed(cfg: StressConfig, s: Structure, pool: Pool | None) -> dict[str, Any]:
    k = cfg.keys_per_agent
    agents = cfg.user_workers + cfg.kernel_threads
    deadline = time.time() + cfg.duration
    tasks = [KeyedTask("stress", 1 + i * k, 1 + (i + 1) * k, cfg.mix, cfg.batch, deadline,
                       cfg.ops, 1000 + i) for i in range(agents)]
    futs = [pool.submit(keyed_user, t) for t in tasks[:cfg.user_workers]] if pool else []
    kthreads = [KernelThread(keyed_kernel, s, t) for t in tasks[cfg.user_workers:]]
    for th in kthreads:
        th.start()
    user: list[KeyedResult] = [f.result() for f in futs]
    kern: list[KeyedResult] = [th.join_result() for th in kthreads]
    # the final state: the union of the agents' models, exactly
    want = array("Q")
    for r in (*user, *kern):
        want.frombytes(r.keys)
    got = s.items(cap=max(16, len(want) * 2 + 16))
    got_keys = sorted(key for key, _ in got)
    v = s.verify()
    kv = s.verify(kernel=True)
    # A kernel call takes a little arena memory for its counters; in a full
    # arena the kernel's verify cannot start (NOMEM, reported), and the
    # user-side verify stands alone.
    kernel_agrees = (kv.ok and kv.count == v.count) or kv.result == Result.NOMEM
    inv = {
        "every batch matched its model": all(r.mismatches == 0 for r in (*user, *kern)),
        "final key set equals the model": got_keys == sorted(want),
        "every value equals its key": all(key == val for key, val in got),
        "verify ok and counts agree": v.ok and v.count == len(want) and kernel_agrees,
    }
    return {"invariants": inv, "user": _side(user), "kernel": _side(kern),
            "final_keys": len(got_keys), "verify": v.__dict__, "verify_kernel": kv.__dict__}


def _side(rs: Sequence[KeyedResult | QueueResult]) -> dict[str, Any]:
    """One side's totals. `nomem`: per op kind, operations that found the arena out
    of memory, a counted outcome that changed nothing (a queue's are pushed again);
    `nomem_calls`: kernel calls that found none for their own counters and ran
    no operation."""
    ops = sum(r.ops for r in rs)
    secs = max((r.seconds for r in rs), default=0.0)
    nomem = {"insert": 0, "delete": 0, "search": 0}
    for r in rs:
        if isinstance(r, KeyedResult):
            for name, n in zip(nomem, r.nomem, strict=True):
                nomem[name] += n
        else:
            nomem["insert"] += r.nomem
    return {"agents": len(rs), "ops": ops, "ops_per_s": round(ops / secs) if secs else 0,
            "nomem": nomem, "nomem_calls": sum(r.nomem_calls for r in rs)}


# ---- queues and stacks ----

def _kernel_producer(s: Structure, task: QueueTask) -> QueueResult:
    res = QueueResult()
    t0 = time.monotonic()
    base = task.producer << SEQ_BITS
    while res.pushed < task.max_items and time.time() < task.deadline:
        n = min(task.batch, task.max_items - res.pushed)
        kb = s.run_kernel(n, insert=1, key_lo=res.pushed, key_span=n, seq=True,
                          val_base=base + res.pushed, stop_on_fail=True)
        res.ops += kb.ops
        res.failures += kb.fails[0]
        res.nomem += kb.nomem
        res.nomem_calls += int(kb.status == Result.NOMEM and kb.ops < n)
        res.pushed += kb.succeeded[0]
        if kb.fails[0]:
            time.sleep(0)
    res.seconds = time.monotonic() - t0
    return res


def _kernel_consumer(s: Structure, batch: int, stop: threading.Event) -> QueueResult:
    def pop() -> tuple[int, int, list[int]]:
        kb = s.run_kernel(batch, pop=1, collect=True)
        return kb.ops, kb.fails[3], [v for _, v in kb.out]

    return consume_until_stopped(pop, stop.is_set)


def _queue(cfg: StressConfig, s: Structure, pool: Pool | None) -> dict[str, Any]:
    deadline = time.time() + cfg.duration
    nu, nk = cfg.user_workers, cfg.kernel_threads
    uprod = [QueueTask("stress", 1 + i, cfg.batch, deadline, cfg.ops) for i in range(nu)]
    kprod = [QueueTask("stress", KERNEL_PRODUCER_BASE + i, cfg.batch, deadline, cfg.ops)
             for i in range(nk)]
    kstop = threading.Event()
    cons_futs = ([pool.submit(queue_consumer, QueueTask("stress", 0, cfg.batch, deadline, 0))
                  for _ in range(cfg.user_consumers)] if pool else [])
    kcons = [KernelThread(_kernel_consumer, s, cfg.batch, kstop)
             for _ in range(cfg.kernel_consumers)]
    prod_futs = [pool.submit(queue_producer, t) for t in uprod] if pool else []
    kthreads = [KernelThread(_kernel_producer, s, t) for t in kprod]
    for th in (*kcons, *kthreads):
        th.start()
    producers: list[QueueResult] = [f.result() for f in prod_futs]
    producers += [th.join_result() for th in kthreads]
    if pool:
        pool.stop.set()
    kstop.set()
    consumers: list[QueueResult] = [f.result() for f in cons_futs]
    consumers += [th.join_result() for th in kcons]
    # what is left, popped here once everyone has stopped
    rest = array("Q")
    while True:
        b = s.pop_many(65536)
        rest.extend(filter(None, b.ovals[:b.n]))
        if b.ok == 0:
            break
    left = QueueResult(popped=rest.tobytes())
    ids = [t.producer for t in (*uprod, *kprod)]
    pushed = {p: r.pushed for p, r in zip(ids, producers, strict=True)}
    inv = _queue_invariants(s.meta, pushed, consumers, left)
    v = s.verify()
    inv["empty at the end"] = v.ok and v.count == 0
    popped = sum(len(c.popped) // 8 for c in consumers)
    return {"invariants": inv, "user": _side(producers[:nu] + consumers[:cfg.user_consumers]),
            "kernel": _side(producers[nu:] + consumers[cfg.user_consumers:]),
            "pushed": sum(pushed.values()), "popped_by_consumers": popped,
            "left_at_end": len(left.popped) // 8, "verify": v.__dict__}


def _queue_invariants(meta: Meta, pushed: dict[int, int], consumers: list[QueueResult],
                      drain: QueueResult) -> dict[str, bool]:
    """pushed: items per producer id; consumers: what each popped, in order;
    drain: what was left, popped by one thread once every agent had stopped."""
    mask = (1 << SEQ_BITS) - 1
    seen: dict[int, list[int]] = {p: [] for p in pushed}
    stray = 0
    fifo_ok = True
    for c in (*consumers, drain):
        vals = array("Q")
        vals.frombytes(c.popped)
        last: dict[int, int] = {}
        for v in vals:
            p, i = v >> SEQ_BITS, v & mask
            if p not in seen:
                stray += 1
                continue
            seen[p].append(i)
            if last.get(p, -1) >= i:
                fifo_ok = False
            last[p] = i
    once = all(sorted(seen[p]) == list(range(n)) for p, n in pushed.items())
    inv = {"every value popped exactly once": once and stray == 0}
    if meta.fifo:
        inv["per-producer FIFO at every consumer"] = fifo_ok
    if meta.lifo:
        # Concurrent pops of a stack may meet a producer's values in any
        # sequence order; what is left once everyone stops keeps push order,
        # newest on top, so the drain sees each producer's sequences falling.
        left = array("Q")
        left.frombytes(drain.popped)
        newer: dict[int, int] = {}  # producer -> the sequence the drain gave last
        lifo_ok = True
        for v in left:
            p, i = v >> SEQ_BITS, v & mask
            if newer.get(p, i + 1) <= i:
                lifo_ok = False
            newer[p] = i
        inv["final drain per-producer LIFO"] = lifo_ok
    return inv


@contextlib.contextmanager
def _arena(cfg: StressConfig) -> Iterator[tuple[Arena, Structure]]:
    """The arena and the structure under test; an arena too small for the
    structure is a config error (one line, exit 2), not a crash."""
    try:
        arena = Arena(cfg.pages)
    except CoreError as e:
        if e.args[0] == errno.EINVAL:
            raise ConfigError(f"stress: cannot create an arena of {cfg.pages} pages "
                              f"({e.args[-1]}); set stress.pages within "
                              f"{STRESS['pages'].describe()}") from None
        raise KernelError(f"stress: cannot create the arena: {e.args[-1]}") from None
    with arena:
        try:
            s = arena.create(cfg.structure, cfg.capacity, name="stress")
        except CoreError as e:
            if e.args[0] == errno.ENOMEM:
                raise ConfigError(f"stress: a {cfg.structure} of capacity {cfg.capacity} does "
                                  f"not fit an arena of {cfg.pages} pages ({e.args[-1]}); raise "
                                  "stress.pages or lower stress.capacity") from None
            raise ConfigError(f"stress: {e.args[-1]}; fix stress.capacity") from None
        yield arena, s


def run(cfg: StressConfig, pin_dir: str = DEFAULT_ROOT) -> dict[str, Any]:
    check_privileges()
    ensure_mounts()
    meta = meta_of(cfg.structure)
    t0 = time.monotonic()
    # the workers attach through pins, in a run directory like the pipeline's,
    # so a stress run killed with SIGKILL leaves pins the next run removes
    with PinRoot.open(pin_dir) as pins, _arena(cfg) as (arena, s):
        pins.clean_stale(lambda msg: log.warning("stress: %s", msg))
        run_dir = pins.make_run_dir()
        try:
            _pin(arena, run_dir)
            nproc = cfg.user_workers + (0 if meta.keyed else cfg.user_consumers)
            pool = Pool(run_dir.path, nproc) if nproc else None
            try:
                if pool:
                    pool.warm(nproc)
                body = _keyed(cfg, s, pool) if meta.keyed else _queue(cfg, s, pool)
            finally:
                if pool:
                    pool.close()
        finally:
            arena.unpin()
            problem = run_dir.remove()
            if problem:
                log.warning("stress: %s", problem)
        body["kernel_totals"] = arena.kernel_totals()
        arena.synchronize()
        heap = arena.heap_stats()
        body["heap"] = {k: heap[k] for k in ("allocs", "frees", "bytes_in_use", "pages_in_use",
                                             "pages_populated", "free_pages", "pages_lost",
                                             "failures", "bad_frees")}
        body["epoch"] = arena.epoch_stats()
        body["stats"] = s.stats()
    return {"structure": cfg.structure, "duration": cfg.duration,
            "seconds": round(time.monotonic() - t0, 3), **body,
            "ok": all(body["invariants"].values())}


def _pin(arena: Arena, run_dir: RunDir) -> None:
    try:
        arena.pin(run_dir.fd_path)
    except OSError as e:
        raise KernelError(f"cannot pin the arena under {run_dir.path}: "
                          f"{os.strerror(e.errno or 0)}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("User worker processes and kernel programs on one arena structure at "
                     "once, checked exactly at the end.")
    p.add_argument("--config", required=True, metavar="PATH", help="configs/stress-*.toml")
    p.add_argument("--duration", type=STRESS["duration"].flag(), metavar="S",
                   help=f"seconds (overrides the config); {STRESS['duration'].describe()}")
    p.add_argument("--ops", type=STRESS["ops"].flag(), metavar="N",
                   help="per agent: operations (keyed) or items per producer (queues); "
                        f"{STRESS['ops'].describe()}")
    p.add_argument("--pin-dir", default=DEFAULT_ROOT, metavar="DIR",
                   help="bpffs directory; the run pins its arena in DIR/<pid> for its workers")


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.duration, args.ops)
    summary = run(cfg, args.pin_dir)
    sys.stdout.write(json.dumps(summary) + "\n")
    if not summary["ok"]:
        failed = [k for k, ok in summary["invariants"].items() if not ok]
        log.error("stress: invariant failed: %s", "; ".join(failed))
        return 1
    return 0
