"""A pool of worker processes on one arena, and kernel threads beside them.

Workers are started with multiprocessing's 'spawn' (no fork of a process that
holds BPF objects and threads) and attach to the arena through its pins: each
maps the same arena at the same address and gets its own epoch record. Every
batch runs in C (pipeline.ds); Python only decides what the next batch is and
keeps the exact model the stress runner checks at the end.

Kernel threads run ds_run_NAME batches through bpf_prog_test_run_opts in the
parent process; the call releases the GIL, so they run alongside each other.
"""

from __future__ import annotations

import os
import random
import threading
import time
from array import array
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from multiprocessing.synchronize import Event
from typing import Any

from .ds import Arena, Op, Result, Structure
from .pins import check_run_dir

# the worker process's arena, attached once by the initializer
_ARENA: Arena | None = None
_STOP: Event | None = None
MIX_OPS = (Op.INSERT, Op.DELETE, Op.SEARCH)


def _attach(pin_dir: str, stop: Event) -> None:
    global _ARENA, _STOP
    _ARENA = Arena.attach(pin_dir)
    _STOP = stop


def _ready() -> int:
    time.sleep(0.05)  # held long enough that the next one goes to another worker
    return os.getpid()


def _structure(name: str) -> Structure:
    assert _ARENA is not None, "worker not attached"
    return _ARENA.lookup(name)


@dataclass
class KeyedTask:
    """One agent's disjoint key range [lo, hi), its op mix and its bound."""

    instance: str
    lo: int
    hi: int
    mix: tuple[int, int, int]  # insert, delete, search weights
    batch: int
    deadline: float
    max_ops: int
    seed: int


@dataclass
class KeyedResult:
    ops: int = 0
    ok: list[int] = field(default_factory=lambda: [0, 0, 0])
    # per op kind: operations that found the arena out of memory (they change nothing)
    nomem: list[int] = field(default_factory=lambda: [0, 0, 0])
    nomem_calls: int = 0  # kernel calls that had no memory to start (no op ran)
    mismatches: int = 0  # batches whose successes differ from the model
    keys: bytes = b""    # the model's final key set, sorted u64s
    seconds: float = 0.0


def keyed_step(model: set[int], kind: Op, keys: set[int], ok: int) -> bool:
    """Apply one batch of unique keys to the model; True if ok matches it.

    A batch holds one kind of operation on distinct keys of the agent's own
    range, so what must succeed follows from set algebra alone: inserts of
    the keys not present, deletes and searches of those present."""
    present = len(keys & model)
    if kind == Op.INSERT:
        model |= keys
        return ok == len(keys) - present
    if kind == Op.DELETE:
        model -= keys
    return ok == present


def keyed_user(task: KeyedTask) -> KeyedResult:
    """A worker: batches on its own key range until the deadline or max_ops."""
    s = _structure(task.instance)
    rng = random.Random(task.seed)
    model: set[int] = set()
    res = KeyedResult()
    t0 = time.monotonic()
    span = range(task.lo, task.hi)
    while res.ops < task.max_ops and time.time() < task.deadline:
        kind = rng.choices(MIX_OPS, weights=task.mix)[0]
        keys = rng.sample(span, min(task.batch, len(span)))
        b = s.exec(kind, array("Q", keys), array("Q", keys), outputs=kind != Op.INSERT)
        res.ops += b.n
        ok = b.ok
        res.ok[MIX_OPS.index(kind)] += ok
        kset = set(keys[:b.n])
        # An operation that found no memory changed nothing: it is counted, and
        # the model follows the operations that did run.
        if b.count(Result.NOMEM):
            starved = {k for k, r in zip(keys, b.results[:b.n], strict=False)
                       if r == Result.NOMEM}
            res.nomem[MIX_OPS.index(kind)] += len(starved)
            kset -= starved
        # found values must be the keys themselves (inserted as value = key)
        if kind != Op.INSERT and sum(b.ovals) != sum(kset & model):
            res.mismatches += 1
        if b.n != len(keys) or not keyed_step(model, kind, kset, ok):
            res.mismatches += 1
    res.keys = array("Q", sorted(model)).tobytes()
    res.seconds = time.monotonic() - t0
    return res


def keyed_kernel(s: Structure, task: KeyedTask) -> KeyedResult:
    """A kernel thread: ds_run_NAME batches of sequential keys in its own range."""
    rng = random.Random(task.seed)
    model: set[int] = set()
    res = KeyedResult()
    t0 = time.monotonic()
    n = task.hi - task.lo
    while res.ops < task.max_ops and time.time() < task.deadline:
        kind = rng.choices(MIX_OPS, weights=task.mix)[0]
        cnt = min(task.batch, n)
        a = task.lo + rng.randrange(n - cnt + 1)
        # value = key: op i meets key a + i and inserts val_base + i
        kb = s.run_kernel(cnt, insert=int(kind == Op.INSERT), delete=int(kind == Op.DELETE),
                          search=int(kind == Op.SEARCH), key_lo=a, key_span=cnt, seq=True,
                          val_base=a)
        res.ops += kb.ops
        k = MIX_OPS.index(kind)
        ok = kb.succeeded[k]
        res.ok[k] += ok
        touched = range(a, a + kb.ops)  # a batch that stops early ran its first ops
        short = kb.ops != cnt
        if short and kb.status == Result.NOMEM:
            # the call found no memory for its own counters and stopped: counted
            res.nomem_calls += 1
            short = False
        if kb.nomem:
            res.nomem[k] += kb.nomem
            if short or not _reconcile(s, model, kind, touched, ok, kb.nomem):
                res.mismatches += 1
        elif short or not keyed_step(model, kind, set(touched), ok):
            res.mismatches += 1
    res.keys = array("Q", sorted(model)).tobytes()
    res.seconds = time.monotonic() - t0
    return res


def _reconcile(s: Structure, model: set[int], kind: Op, touched: range, ok: int,
               nomem: int) -> bool:
    """After a kernel batch in which `nomem` operations found no memory.

    The kernel reports counts, not which keys starved, so the agent reads its
    own keys back (no other agent touches them) and checks that what it finds
    is exactly a batch whose starved inserts did nothing: every key present
    before still is, `ok` keys are new, `nomem` are still absent. The model
    becomes what was found."""
    if kind != Op.INSERT:
        return False  # only inserts allocate
    keys = array("Q", touched)
    found = s.search_many(keys)
    present = {key for key, r in zip(keys, found.results[:found.n], strict=True)
               if r == Result.OK}
    before = model.intersection(touched)
    consistent = (found.n == len(keys) and before <= present
                  and len(present - before) == ok and len(keys) - len(present) == nomem)
    model |= present
    return consistent


@dataclass
class QueueTask:
    instance: str
    producer: int  # id, in the values' high bits (value = producer << 40 | sequence)
    batch: int
    deadline: float
    max_items: int


@dataclass
class QueueResult:
    pushed: int = 0
    popped: bytes = b""  # values in the order this consumer popped them
    ops: int = 0
    failures: int = 0
    nomem: int = 0  # pushes that found the arena out of memory (pushed again later)
    nomem_calls: int = 0  # kernel calls that had no memory to start (no op ran)
    seconds: float = 0.0


SEQ_BITS = 40


def queue_producer(task: QueueTask) -> QueueResult:
    """Push producer << 40 | 0, 1, 2... in batches; a failure (full, busy) ends a batch,
    so the values go in in order and the rest is pushed again."""
    s = _structure(task.instance)
    res = QueueResult()
    t0 = time.monotonic()
    base = task.producer << SEQ_BITS
    while res.pushed < task.max_items and time.time() < task.deadline:
        n = min(task.batch, task.max_items - res.pushed)
        vals = array("Q", range(base + res.pushed, base + res.pushed + n))
        keys = array("Q", range(res.pushed, res.pushed + n))
        b = s.exec(Op.INSERT, keys, vals, stop_on_fail=True, outputs=False)
        res.ops += b.n
        ok = b.ok
        res.failures += b.n - ok
        res.nomem += b.count(Result.NOMEM)
        res.pushed += ok
        if ok < n:
            time.sleep(0)
    res.seconds = time.monotonic() - t0
    return res


def consume_until_stopped(pop: Callable[[], tuple[int, int, Iterable[int]]],
                          stop: Callable[[], bool]) -> QueueResult:
    """Pop in batches until told to stop and the structure answers empty.

    pop() runs one batch and returns (operations, failed pops, values popped); the
    user and the kernel consumers differ only in that."""
    res = QueueResult()
    out = array("Q")
    t0 = time.monotonic()
    while True:
        stopping = stop()  # read before the pop: a batch after it finds what was left
        ops, failures, values = pop()
        res.ops += ops
        res.failures += failures
        before = len(out)
        out.extend(values)
        if len(out) == before:
            if stopping:
                break
            time.sleep(0.0005)
    res.popped = out.tobytes()
    res.seconds = time.monotonic() - t0
    return res


def queue_consumer(task: QueueTask) -> QueueResult:
    """A worker's consumer: user-side pops."""
    s = _structure(task.instance)
    assert _STOP is not None
    stop_event = _STOP

    def pop() -> tuple[int, int, Iterable[int]]:
        b = s.pop_many(task.batch)
        # failed pops leave 0 and no value is 0 (producer ids start at 1)
        return b.n, b.n - b.ok, filter(None, b.ovals[:b.n])

    return consume_until_stopped(pop, stop_event.is_set)


class Pool:
    """Worker processes attached to the arena pinned under pin_dir."""

    def __init__(self, pin_dir: str, workers: int) -> None:
        ctx = get_context("spawn")
        self.stop = ctx.Event()
        self._ex = ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                                       initializer=_attach, initargs=(pin_dir, self.stop))

    @classmethod
    def for_run(cls, run_dir: str, workers: int) -> Pool:
        """Workers on a running pipeline's arena (its queue and its data-structure space):
        run_dir, the run's pin directory PIN_DIR/<pid>, is checked the way `burst
        --pin-dir` is (pipeline.pins.check_run_dir: a root-owned 0700 run directory under a
        safe pin root, holding only this program's pins) before any worker opens it."""
        return cls(check_run_dir(run_dir, "ds_trim"), workers)

    def warm(self, n: int) -> None:
        """Start and attach every worker now, so that run time is not start-up time."""
        for f in [self._ex.submit(_ready) for _ in range(n)]:
            f.result()

    def submit(self, fn: Callable[[Any], Any], task: Any) -> Future[Any]:
        return self._ex.submit(fn, task)

    def close(self) -> None:
        self._ex.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class KernelThread(threading.Thread):
    """fn(*args) in a thread, its result or exception kept for join_result()."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        super().__init__(daemon=True)
        self._fn, self._args = fn, args
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._fn(*self._args)
        except BaseException as e:  # re-raised in the caller's thread
            self.error = e

    def join_result(self) -> Any:
        self.join()
        if self.error is not None:
            raise self.error
        return self.result
