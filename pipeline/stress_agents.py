"""The agents of a stress run: user worker processes and kernel threads.

A worker process is started with multiprocessing's 'spawn' (no fork of a
process holding BPF objects and threads), attaches to the arena through its
pins and runs one C loop per thread (DsArena.run_loop, GIL released). The
loops wait at a start flag in a control block shared with the driver, so every
thread of every worker starts at once; they write their progress there, and
keyed loops add each successful insert and delete to per-key counters in
memory shared with the driver: an array of the thread's own (plain updates) when
every thread's fits NET_OWN_MAX, else one array for all of them (atomic adds).
What a worker killed mid-run did is therefore still readable: its counters, and
the key its threads were changing.

Each worker sends one message when attached and one with its threads' results;
a worker that dies sends nothing more, and the driver sees its exit code.
"""

from __future__ import annotations

import signal
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing import get_context
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from .ds import Arena, Result, Structure
from .pool import SEQ_BITS, KeyedResult, KeyedTask, QueueResult, QueueTask, consume_until_stopped

CTL_GO, CTL_STOP, CTL_DRAIN, CTL_DEADLINE = 0, 1, 2, 3
CTL_SLOT0, SLOT_WORDS = 8, 8
SLOT_PROGRESS, SLOT_INFLIGHT, SLOT_STATE = 0, 1, 2
ROLE_KEYED, ROLE_PRODUCER, ROLE_CONSUMER = 0, 1, 2
SAMPLE_SHIFT = 8  # one operation in 256 is timed (until SAMPLE_CAP samples)
SAMPLE_CAP = 1 << 16
HIST_KERNEL = 0x80000000  # struct ds_hist_rec.agent of a kernel agent: this bit | its index
HIST_REC = 40             # bytes per record
NET_OWN_MAX = 256 << 20   # bytes of per-thread key counters, beyond which they are shared


def control_words(slots: int) -> int:
    return CTL_SLOT0 + slots * SLOT_WORDS


@dataclass
class ThreadSpec:
    slot: int
    agent: int      # struct ds_hist_rec.agent: worker * 256 + thread
    role: int
    seed: int
    producer: int = 0


@dataclass
class WorkerSpec:
    index: int
    pin_dir: str
    instance: str
    threads: list[ThreadSpec]
    ops: int
    mix: tuple[int, int, int]
    keys: int
    theta: float
    hist_cap: int
    net_own: bool = False  # net holds one array of keys counters per slot


def net_view(net: memoryview, keys: int, slot: int, own: bool) -> memoryview:
    """The key counters a thread updates: its own slice, or the shared array."""
    return net[slot * keys:(slot + 1) * keys] if own else net


def _thread(arena: Arena, s: Structure, w: WorkerSpec, t: ThreadSpec, control: Any, net: Any,
            out: list[dict[str, Any]], i: int) -> None:
    try:
        keyed = t.role == ROLE_KEYED and net is not None
        out[i] = arena._core.run_loop(
            s.address, s.meta.id, control, t.slot, role=t.role, ops=w.ops, mix=w.mix, key_lo=1,
            keys=w.keys, theta=w.theta, seed=t.seed, producer=t.producer,
            net=net_view(net, w.keys, t.slot, w.net_own) if keyed else None,
            net_own=keyed and w.net_own, agent=t.agent, sample_shift=SAMPLE_SHIFT,
            sample_cap=SAMPLE_CAP, hist_cap=w.hist_cap)
    except Exception as e:  # sent to the driver, which reports it
        out[i] = {"error": f"{type(e).__name__}: {e}"}


def worker_main(w: WorkerSpec, control: Any, net: Any, conn: Connection) -> None:
    """A worker process: attach, say so, run every thread's loop, send the results.
    SIGINT (a Ctrl-C reaches the whole process group) is the driver's to handle: it
    tells the loops to stop through the control block."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        arena = Arena.attach(w.pin_dir)
        s = arena.lookup(w.instance)
    except Exception as e:
        conn.send({"error": f"cannot attach: {e}"})
        return
    ctl = memoryview(control).cast("B").cast("Q")
    nv = memoryview(net).cast("B").cast("i") if net is not None else None
    conn.send({"ready": True})
    out: list[dict[str, Any]] = [{} for _ in w.threads]
    ts = [threading.Thread(target=_thread, args=(arena, s, w, t, ctl, nv, out, i))
          for i, t in enumerate(w.threads)]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    conn.send({"threads": out})
    conn.close()
    ctl.release()
    if nv is not None:
        nv.release()
    arena.close()


@dataclass
class Worker:
    spec: WorkerSpec
    proc: BaseProcess
    conn: Connection
    ready: bool = False
    result: list[dict[str, Any]] | None = None
    error: str = ""
    eof: bool = False  # the pipe is closed: nothing more will come

    @property
    def dead(self) -> bool:
        """Ended without sending its results (poll() has taken everything it sent)."""
        return self.result is None and self.eof and self.proc.exitcode is not None


def start_workers(specs: list[WorkerSpec], control: Any, net: Any) -> list[Worker]:
    ctx = get_context("spawn")
    out = []
    # started with SIGINT ignored (spawn's exec keeps that), so that a Ctrl-C during
    # their start-up does not print a traceback from each: the driver handles it
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for spec in specs:
            parent, child = ctx.Pipe(duplex=False)
            p = ctx.Process(target=worker_main, args=(spec, control, net, child), daemon=True,
                            name=f"stress-worker-{spec.index + 1}")
            p.start()
            child.close()
            out.append(Worker(spec, p, parent))
    finally:
        signal.signal(signal.SIGINT, old)
    return out


def poll(w: Worker) -> None:
    """Take what the worker sent, without blocking."""
    try:
        while w.result is None and w.conn.poll():
            msg = w.conn.recv()
            if "ready" in msg:
                w.ready = True
            elif "threads" in msg:
                w.result = msg["threads"]
            elif "error" in msg:
                w.error = msg["error"]
    except (EOFError, OSError):
        w.eof = True


# ---- kernel threads (in the driver, through ds_run_NAME) ----

class KernelHistory:
    """The records a kernel agent's batches wrote (include/ds/history.h), up to cap of them:
    like a user loop's, a full history ends the agent."""

    def __init__(self, index: int, cap: int) -> None:
        self.agent = HIST_KERNEL | index
        self.cap = cap
        self.parts: list[bytes] = []
        self.records = 0

    def room(self) -> int:
        return self.cap - self.records

    def add(self, raw: bytes) -> None:
        self.parts.append(raw)
        self.records += len(raw) // HIST_REC

    def data(self) -> bytes:
        return b"".join(self.parts)


def _room(n: int, hist: KernelHistory | None) -> int:
    return n if hist is None else min(n, hist.room())


def kernel_shared(s: Structure, task: KeyedTask, stop: threading.Event,
                  hist: KernelHistory, progress: list[int]) -> KeyedResult:
    """A kernel agent on the user workers' keys (task.lo .. task.hi - 1): ds_run_NAME batches
    of random keys drawn from the weights, each insert's value its key. The recorded
    history is what checks it (per key, and for linearizability)."""
    res = KeyedResult()
    t0 = time.monotonic()
    ins, dele, srch = task.mix
    calls = 0
    while (res.ops < task.max_ops and time.time() < task.deadline and not stop.is_set()
           and hist.room() > 0):
        n = _room(min(task.batch, task.max_ops - res.ops), hist)
        calls += 1
        kb = s.run_kernel(n, insert=ins, delete=dele, search=srch, key_lo=task.lo,
                          key_span=task.hi - task.lo, seed=(task.seed + calls) % (1 << 64) or 1,
                          val_key=True, history=True, agent=hist.agent)
        hist.add(kb.history)
        res.ops += kb.ops
        for k in range(3):
            res.ok[k] += kb.succeeded[k]
        res.nomem[0] += kb.nomem  # only inserts allocate
        if kb.ops == 0 and kb.status == Result.NOMEM:  # no memory for the call's counters
            res.nomem_calls += 1
        progress[0] = res.ops
    res.seconds = time.monotonic() - t0
    return res

class KernelAgent(threading.Thread):
    """fn(*args) in a thread, its result or exception kept; progress readable while it runs.
    Started before the run, it waits for go: the kernel agents start with the user
    workers' loops, not a thread start-up later."""

    def __init__(self, name: str, fn: Any, *args: Any,
                 prepare: Callable[[], None] | None = None) -> None:
        super().__init__(daemon=True, name=name)
        self._fn, self._args, self._prepare = fn, args, prepare
        self.result: Any = None
        self.error: BaseException | None = None
        self.progress = [0]
        self.ready = threading.Event()  # prepared (or failed to)
        self.go = threading.Event()

    def run(self) -> None:
        try:
            try:
                if self._prepare is not None:
                    self._prepare()
            finally:
                self.ready.set()
            self.go.wait()
            self.result = self._fn(*self._args, self.progress)
        except BaseException as e:  # re-raised by join_result
            self.error = e

    def join_result(self) -> Any:
        self.join()
        if self.error is not None:
            raise self.error
        return self.result


def kernel_keyed(s: Structure, task: KeyedTask, stop: threading.Event,
                 progress: list[int]) -> KeyedResult:
    """A kernel agent on a key range of its own: ds_run_NAME batches of sequential keys,
    each checked against the agent's exact model (pipeline.pool.keyed_kernel's rules).
    keyed_kernel reads task.deadline before every batch, so the stop event ends it by
    pulling the deadline in."""
    from .pool import keyed_kernel

    def watch() -> None:
        stop.wait()
        task.deadline = 0.0

    threading.Thread(target=watch, daemon=True).start()
    res = keyed_kernel(s, task)
    progress[0] = res.ops
    return res


def kernel_producer(s: Structure, task: QueueTask, stop: threading.Event,
                    hist: KernelHistory | None, progress: list[int]) -> QueueResult:
    res = QueueResult()
    t0 = time.monotonic()
    base = task.producer << SEQ_BITS
    while (res.pushed < task.max_items and time.time() < task.deadline
           and not stop.is_set() and (hist is None or hist.room() > 0)):
        n = _room(min(task.batch, task.max_items - res.pushed), hist)
        kb = s.run_kernel(n, insert=1, key_lo=res.pushed, key_span=n, seq=True,
                          val_base=base + res.pushed, stop_on_fail=True,
                          history=hist is not None, agent=hist.agent if hist else 0)
        if hist is not None:
            hist.add(kb.history)
        res.ops += kb.ops
        res.failures += kb.fails[0]
        res.nomem += kb.nomem
        res.pushed += kb.succeeded[0]
        progress[0] = res.ops
        if kb.fails[0]:
            time.sleep(0)
    res.seconds = time.monotonic() - t0
    return res


def kernel_consumer(s: Structure, batch: int, drain: threading.Event,
                    hist: KernelHistory | None, progress: list[int]) -> QueueResult:
    """Pops until the producers are done and the structure answers empty. With a history,
    a full one ends the agent early (what it left is the final drain's)."""
    def pop() -> tuple[int, int, list[int]]:
        n = _room(batch, hist)
        if n == 0:
            return 0, 0, []
        kb = s.run_kernel(n, pop=1, collect=True, history=hist is not None,
                          agent=hist.agent if hist else 0)
        if hist is not None:
            hist.add(kb.history)
        progress[0] += kb.ops
        return kb.ops, kb.fails[3], [v for _, v in kb.out]

    def stopped() -> bool:
        return drain.is_set() or (hist is not None and hist.room() == 0)

    return consume_until_stopped(pop, stopped)


@dataclass
class Side:
    """Totals of one kind of agent for the report."""

    ops: int = 0
    seconds: float = 0.0
    failures: dict[str, dict[str, int]] = field(default_factory=dict)


def popped_values(raw: bytes) -> array[int]:
    a = array("Q")
    a.frombytes(raw)
    return a
