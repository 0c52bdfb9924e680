"""The arena data structures (include/ds) from Python, through pipeline._ds.DsArena.

An `Arena` loads the kernel-side programs (bpf/ds_ops.bpf.c) with an arena of its
own, attaches to one another process pinned (`Arena.attach`: a data-structure arena's
pins or a running pipeline's), or is the data-structure space of a capture session's
arena in the session's own process (`Arena.of_session`): one arena holds the event
queue and the structures, and a process maps one arena. `Structure`s are
instances in it, operated on in batches: buffers of u64 keys and values in
(array('Q'), bytes, memoryview, or any sequence of ints), result codes and returned
keys/values out. One Python call runs a whole batch in C with the GIL released, so
a worker does millions of operations per second; `run_kernel` runs a batch in a
SEC("syscall") program at the same time.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeAlias

from . import _ds

#: what batches take for keys and values
U64s: TypeAlias = "array[int] | bytes | bytearray | memoryview | Sequence[int]"


# The contract's codes (include/ds/ds_api.h), built by the extension from its C
# tables: enum ds_result, enum ds_op (members INSERT...; name.lower() is the
# spelling stats() and `ds list` use), struct ds_meta.flags and .model.
Result = _ds.DsResult
Op = _ds.DsOp
Flag = _ds.DsFlag
Model = _ds.DsModel


class _FlagBit:
    """A bool property of Meta: is this flag set in its flags."""

    def __init__(self, flag: Flag) -> None:
        self.flag = flag

    def __get__(self, meta: Meta, owner: type[Meta] | None = None) -> bool:
        return bool(meta.flags & self.flag)


@dataclass(frozen=True)
class Meta:
    """One line of the registry (include/ds/registry.h) with its metadata."""

    id: int
    name: str
    description: str
    progress: str
    flags: int
    model: int
    ops: int
    node_size: int
    head_size: int

    lock_free = _FlagBit(Flag.LOCK_FREE)
    bounded = _FlagBit(Flag.BOUNDED)
    keyed = _FlagBit(Flag.KEYED)
    ordered = _FlagBit(Flag.ORDERED)
    fifo = _FlagBit(Flag.FIFO)
    lifo = _FlagBit(Flag.LIFO)

    @property
    def model_name(self) -> str:
        try:
            model = Model(self.model)
        except ValueError:
            return str(self.model)
        # "any" reads as a word, the others as the acronyms they are
        return "any" if model == Model.ANY else model.name

    @property
    def op_names(self) -> list[str]:
        return [op.name.lower() for op in Op if self.ops & (1 << op)]

    def has(self, op: Op) -> bool:
        return bool(self.ops & (1 << op))

    def describe(self) -> dict[str, Any]:
        """For `ds list --format json`: the raw fields and their meaning spelled out."""
        return {**asdict(self), "lock_free": self.lock_free, "bounded": self.bounded,
                "keyed": self.keyed, "ordered": self.ordered, "fifo": self.fifo,
                "lifo": self.lifo, "producer_consumer": self.model_name,
                "operations": self.op_names}


def registry() -> list[Meta]:
    """Every registered structure, in registry order."""
    return [Meta(**m) for m in _ds.ds_meta()]


def meta_of(name_or_id: str | int) -> Meta:
    for m in registry():
        if name_or_id in (m.name, m.id):
            return m
    raise KeyError(f"no registered data structure {name_or_id!r}; "
                   f"known: {', '.join(m.name for m in registry())}")


def u64s(values: U64s | Iterable[int]) -> array[int] | bytes | bytearray | memoryview:
    """Something the C side reads as u64s, without a copy when it already is one."""
    if isinstance(values, array | bytes | bytearray | memoryview):
        return values
    return array("Q", values)


@dataclass(frozen=True)
class Verify:
    """What verify found: a result code and the count and sums to compare with a model."""

    result: int
    count: int
    keysum: int
    valsum: int
    where: int

    @property
    def ok(self) -> bool:
        return self.result == Result.OK


@dataclass
class Batch:
    """The outcome of a user batch: a result code per op and what the ops returned."""

    n: int
    results: bytearray
    okeys: array[int]
    ovals: array[int]

    @property
    def ok(self) -> int:
        """Operations that returned DS_OK."""
        return self.results.count(0, 0, self.n)

    def count(self, result: Result) -> int:
        return self.results.count(int(result), 0, self.n)


@dataclass(frozen=True)
class KernelBatch:
    """The outcome of run_kernel: per op kind (insert, delete, search, pop) done and failed."""

    done: list[int]
    fails: list[int]
    nomem: int
    busy: int
    full: int
    ns: int
    calls: int
    status: int
    out: list[tuple[int, int]]
    history: bytes = b""  # struct ds_hist_rec records (include/ds/history.h), if asked for

    @property
    def ops(self) -> int:
        return sum(self.done)

    @property
    def succeeded(self) -> list[int]:
        return [d - f for d, f in zip(self.done, self.fails, strict=True)]


def pairs(raw: bytes) -> list[tuple[int, int]]:
    """Bytes of (u64 key, u64 val) pairs as a list of tuples."""
    a = array("Q")
    a.frombytes(raw)
    return list(zip(a[0::2], a[1::2], strict=True))


class Arena:
    """An arena with a data-structure space: owned (loads the programs) or attached to pins."""

    def __init__(self, pages: int = 32768, *, pool_pages: int = 4, poison: bool = False,
                 _pinned: str | None = None, _session: object | None = None) -> None:
        self._core = _ds.DsArena(pages=pages, pinned=_pinned, pool_pages=pool_pages,
                                   poison=poison, session=_session)

    @classmethod
    def attach(cls, pin_dir: str) -> Arena:
        """Map the arena another process pinned under pin_dir (same address, own contexts):
        a data-structure arena's pins, or a running pipeline's run directory."""
        return cls(_pinned=pin_dir)

    @classmethod
    def of_session(cls, session: object) -> Arena:
        """The data-structure space of a capture session's arena (pipeline._core.Session),
        in the session's process: its mapping and kernel programs, no second arena. It
        closes with the session: after Session.close() every call raises ValueError."""
        return cls(_session=session)

    def create(self, kind: str | int, capacity: int = 0, name: str | None = None) -> Structure:
        addr, type_id = self._core.create(kind, capacity, name)
        return Structure(self, addr, meta_of(type_id))

    def lookup(self, name: str) -> Structure:
        found = self._core.lookup(name)
        if found is None:
            raise KeyError(f"no instance named {name!r} in the arena")
        return Structure(self, found[0], meta_of(found[1]))

    def structures(self) -> dict[str, Structure]:
        return {n: Structure(self, a, meta_of(t)) for n, a, t in self._core.instances()}

    def pin(self, pin_dir: str) -> None:
        self._core.pin(pin_dir)

    def unpin(self) -> None:
        self._core.unpin()

    def heap_stats(self) -> dict[str, int]:
        return self._core.heap_stats()

    def epoch_stats(self) -> dict[str, int]:
        return self._core.epoch_stats()

    def trim(self, max_pages: int = 1 << 20, *, force: bool = True) -> dict[str, int]:
        """Give free pages back to the kernel (docs/ds.md, "Memory goes back"): down to the
        keep watermark (force), or only when above the high one. Returns given,
        quarantined, free_pages and calls."""
        return self._core.trim(max_pages, force)

    def set_trim(self, keep: int, high: int) -> None:
        """Trim watermarks in pages on the free stack: 0 <= keep <= high <= 2**20."""
        self._core.set_trim(keep, high)

    def kernel_totals(self) -> dict[str, int]:
        return self._core.kernel_totals()

    def synchronize(self) -> bool:
        """Wait until everything retired so far is freed (for exact memory figures)."""
        return self._core.synchronize()

    def info(self) -> dict[str, Any]:
        return self._core.info()

    def close(self) -> None:
        self._core.close()

    def __enter__(self) -> Arena:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Structure:
    """One instance in an arena; every method is one batch."""

    def __init__(self, arena: Arena, address: int, meta: Meta) -> None:
        self.arena = arena
        self.address = address
        self.meta = meta

    def __repr__(self) -> str:
        return f"<Structure {self.meta.name} at {self.address:#x}>"

    def exec(self, ops: int | bytes | bytearray | memoryview, keys: U64s | None = None,
             vals: U64s | None = None, *, count: int = -1, stop_on_fail: bool = False,
             outputs: bool = True) -> Batch:
        """A mixed batch: ops (one Op for all, or a u8 per op), keys and vals."""
        k = None if keys is None else u64s(keys)
        v = None if vals is None else u64s(vals)
        n = count
        if n < 0:
            sizes = [len(memoryview(x).cast("B")) // 8 for x in (k, v) if x is not None]
            if not isinstance(ops, int):
                sizes.append(len(memoryview(ops).cast("B")))
            n = min(sizes) if sizes else 0
        results = bytearray(n)
        okeys = array("Q", bytes(8 * n)) if outputs else array("Q")
        ovals = array("Q", bytes(8 * n)) if outputs else array("Q")
        done = self.arena._core.exec(self.address, self.meta.id, ops, k, v, results=results,
                                     okeys=okeys if outputs else None,
                                     ovals=ovals if outputs else None, count=n,
                                     stop_on_fail=stop_on_fail)
        return Batch(done, results, okeys, ovals)

    def insert_many(self, keys: U64s, vals: U64s | None = None, *,
                    stop_on_fail: bool = False) -> Batch:
        """Insert (push, for queues and stacks) key i with value i (the key if vals is None)."""
        k = u64s(keys)
        return self.exec(Op.INSERT, k, k if vals is None else vals, stop_on_fail=stop_on_fail,
                         outputs=False)

    def search_many(self, keys: U64s) -> Batch:
        return self.exec(Op.SEARCH, keys)

    def delete_many(self, keys: U64s) -> Batch:
        return self.exec(Op.DELETE, keys)

    def pop_many(self, n: int) -> Batch:
        return self.exec(Op.POP, count=n)

    def run_kernel(self, count: int, *, insert: int = 0, delete: int = 0, search: int = 0,
                   pop: int = 0, key_lo: int = 0, key_span: int = 1, seq: bool = False,
                   seed: int = 1, val_base: int = 0, stop_on_fail: bool = False,
                   collect: bool = False, per_call: int = 4096, history: bool = False,
                   agent: int = 0, val_key: bool = False) -> KernelBatch:
        """count ops in the kernel (ds_run_NAME), per_call per syscall, drawn from the weights.
        history: a struct ds_hist_rec per operation, written by the kernel with the given
        agent; val_key: each insert's value is its key."""
        mix = (insert, delete, search, pop)
        if not any(mix):
            raise ValueError("run_kernel needs a weight for at least one op")
        r = self.arena._core.run_kernel(self.address, self.meta.id, count, mix, key_lo,
                                        key_span, seq, seed, val_base, stop_on_fail, collect,
                                        per_call, history, agent, val_key)
        return KernelBatch(done=r["done"], fails=r["fails"], nomem=r["nomem"], busy=r["busy"],
                           full=r["full"], ns=r["ns"], calls=r["calls"], status=r["status"],
                           out=pairs(r["out"]) if r["out"] is not None else [],
                           history=r["history"] or b"")

    def kernel_buffers(self, *, collect: bool = False, history: bool = False,
                       per_call: int = 4096) -> None:
        """Take the calling thread's arena buffers for run_kernel now (OSError ENOMEM when
        the arena has no room), so that its later batches never need room the structure
        may have used up by then."""
        self.arena._core.kernel_buffers(per_call, collect, history)

    def refill(self) -> Result:
        """Fill the kernel CPUs' page pools of this structure's heap (a sleepable kernel
        batch): what non-sleepable programs allocate from."""
        return Result(self.arena._core.refill(self.address, self.meta.id))

    def verify(self, *, kernel: bool = False) -> Verify:
        return Verify(*self.arena._core.verify(self.address, self.meta.id, kernel))

    def items(self, *, kernel: bool = False, cap: int = 1 << 20) -> list[tuple[int, int]]:
        """Every (key, value), in the structure's order (quiescent structures: exact)."""
        return self.range(0, (1 << 64) - 1, kernel=kernel, cap=cap)

    def range(self, lo: int, hi: int, *, kernel: bool = False,
              cap: int = 1 << 20) -> list[tuple[int, int]]:
        """(key, value) for keys in [lo, hi); in key order for the ordered structures."""
        res, raw = self.arena._core.iterate(self.address, self.meta.id, lo, hi, cap, kernel)
        if res != Result.OK:
            raise _ds.CoreError(5, f"{self.meta.name}: iterate returned {Result(res).name}")
        return pairs(raw)

    def stats(self) -> dict[str, dict[str, dict[str, int]]]:
        """Per side ("kernel", "user"), per op: count, failures, ns."""
        return self.arena._core.stats(self.address, self.meta.id)
