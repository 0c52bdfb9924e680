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
import json
import os
import sys
import threading
import time
import tomllib
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .ds import Arena, Meta, Structure, meta_of
from .errors import ConfigError, KernelError
from .kernel import check_privileges, ensure_mounts
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
    try:
        raw = tomllib.loads(Path(path).read_text())
    except OSError as e:
        raise ConfigError(f"cannot read stress config {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    t = raw.get("stress")
    if not isinstance(t, dict):
        raise ConfigError(f"{path}: needs a [stress] table")
    known = set(StressConfig.__dataclass_fields__)
    for k in t:
        if k not in known:
            raise ConfigError(f"{path}: unknown key stress.{k} (known: {', '.join(sorted(known))})")
    if "structure" not in t:
        raise ConfigError(f"{path}: stress.structure is required")
    try:
        meta_of(t["structure"])
    except KeyError as e:
        raise ConfigError(f"{path}: {e.args[0]}") from None
    args: dict[str, Any] = dict(t)
    if "mix" in args:
        m = args["mix"]
        if not isinstance(m, dict) or set(m) - {"insert", "delete", "search"}:
            raise ConfigError(f"{path}: stress.mix is a table of insert, delete, search weights")
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

    for name in ("capacity", "ops", "batch", "user_workers", "kernel_threads", "user_consumers",
                 "kernel_consumers", "keys_per_agent", "pages"):
        v = getattr(c, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise bad(f"stress.{name} must be a non-negative integer, not {v!r}")
    if not isinstance(c.duration, int | float) or c.duration <= 0:
        raise bad(f"stress.duration must be a positive number of seconds, not {c.duration!r}")
    if not 1 <= c.batch <= 65536:
        raise bad("stress.batch must be 1 to 65536")
    if any(not isinstance(w, int) or w < 0 for w in c.mix) or not any(c.mix):
        raise bad("stress.mix weights must be non-negative integers, not all zero")
    if c.user_workers + c.kernel_threads == 0:
        raise bad("needs at least one user worker or kernel thread")
    if m.keyed:
        if c.keys_per_agent < 1:
            raise bad("stress.keys_per_agent must be at least 1")
        return
    producers, consumers = c.user_workers + c.kernel_threads, c.user_consumers + c.kernel_consumers
    if consumers == 0:
        raise bad(f"{m.name} is a queue: needs user_consumers or kernel_consumers")
    if m.model_name == "SPSC" and (producers != 1 or consumers != 1):
        raise bad(f"{m.name} is SPSC: exactly one producer and one consumer")
    if m.model_name == "MPSC" and consumers != 1:
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
    inv = {
        "every batch matched its model": all(r.mismatches == 0 for r in (*user, *kern)),
        "final key set equals the model": got_keys == sorted(want),
        "every value equals its key": all(key == val for key, val in got),
        "verify ok and counts agree": v.ok and kv.ok and v.count == kv.count == len(want),
    }
    return {"invariants": inv, "user": _side(user), "kernel": _side(kern),
            "final_keys": len(got_keys), "verify": v.__dict__}


def _side(rs: Sequence[KeyedResult | QueueResult]) -> dict[str, Any]:
    ops = sum(r.ops for r in rs)
    secs = max((r.seconds for r in rs), default=0.0)
    return {"agents": len(rs), "ops": ops, "ops_per_s": round(ops / secs) if secs else 0}


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


def run(cfg: StressConfig, pin_dir: str = DEFAULT_ROOT) -> dict[str, Any]:
    check_privileges()
    ensure_mounts()
    meta = meta_of(cfg.structure)
    t0 = time.monotonic()
    # the workers attach through pins, in a run directory like the pipeline's,
    # so a stress run killed with SIGKILL leaves pins the next run removes
    with PinRoot.open(pin_dir) as pins, Arena(cfg.pages) as arena:
        pins.clean_stale(_log)
        s = arena.create(cfg.structure, cfg.capacity, name="stress")
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
                _log(problem)
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


def _log(msg: str) -> None:
    print(f"stress: {msg}", file=sys.stderr, flush=True)


def _pin(arena: Arena, run_dir: RunDir) -> None:
    try:
        arena.pin(run_dir.fd_path)
    except OSError as e:
        raise KernelError(f"cannot pin the arena under {run_dir.path}: "
                          f"{os.strerror(e.errno or 0)}") from None


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline stress",
                                description="User worker processes and kernel programs on one "
                                            "arena structure at once, checked exactly at the end.")
    p.add_argument("--config", required=True, metavar="PATH", help="configs/stress-*.toml")
    p.add_argument("--duration", type=float, metavar="S", help="seconds (overrides the config)")
    p.add_argument("--ops", type=int, metavar="N",
                   help="per agent: operations (keyed) or items per producer (queues)")
    p.add_argument("--pin-dir", default=DEFAULT_ROOT, metavar="DIR",
                   help="bpffs directory; the run pins its arena in DIR/<pid> for its workers")
    args = p.parse_args(list(argv))
    cfg = load_config(args.config, args.duration, args.ops)
    summary = run(cfg, args.pin_dir)
    sys.stdout.write(json.dumps(summary) + "\n")
    if not summary["ok"]:
        failed = [k for k, ok in summary["invariants"].items() if not ok]
        print(f"stress: invariant failed: {'; '.join(failed)}", file=sys.stderr)
        return 1
    return 0
