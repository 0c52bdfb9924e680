"""The linearizability checker: does a recorded history of a concurrent structure have a
linearization, and if not, which operations show it?

A history is a buffer of 40-byte records (include/ds/history.h, struct ds_hist_rec,
little-endian "<QQQQIBBH": t_inv, t_resp, key, value, agent, op, result, flags), one per
completed operation, with CLOCK_MONOTONIC times. The decision runs in C
(pipeline/_lin, module pipeline._linearize) with the GIL released:

- "map" and "set" (hash, skiplist, list): the history is split by key and each key's
  operations are decided on their own by a Wing-Gong search with Lowe's cache of
  configurations seen (pipeline/_lin/keyed.c). "set" compares presence only, "map" also
  the values inserted, found and deleted.
- "queue" (msqueue, mpmc, mpsc, spsc, evq) and "stack": added values must be distinct;
  the history is searched for the violation patterns that characterise non-linearizable
  queue and stack histories with distinct values (pipeline/_lin/seq.c).

Operations that failed without effect (BUSY, NOMEM, FULL, INVALID, CORRUPT) are left
out and counted as `ignored`. docs/linearizability.md says what is checked and why.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import _linearize

RECORD = struct.Struct("<QQQQIBBH")
RECORD_SIZE = RECORD.size
KERNEL_AGENT = 0x80000000  # DS_HIST_KERNEL
KINDS = ("map", "set", "queue", "stack")
# search steps before a verdict is given up as undecided. Histories of real runs need
# about one step per operation; only very wide overlaps (tens of operations all
# concurrent with each other) make the searches backtrack, at microseconds a step.
DEFAULT_BUDGET = 10_000_000

# enum ds_op and enum ds_result (include/ds/ds_api.h), for the explanations; tests hold
# them to pipeline.ds's tables, which are built from the header
OP_NAMES = {0: "init", 1: "insert", 2: "delete", 3: "pop", 4: "search", 5: "verify",
            6: "iterate", 7: "stats"}
RESULT_NAMES = {0: "OK", 1: "NOT_FOUND", 2: "EXISTS", 3: "NOMEM", 4: "INVALID", 5: "CORRUPT",
                6: "BUSY", 7: "FULL"}
OP_INSERT, OP_DELETE, OP_POP, OP_SEARCH = 1, 2, 3, 4
OK, NOT_FOUND, EXISTS = 0, 1, 2

# enum lin_verdict and enum lin_what (pipeline/_lin/lin.h)
_VIOLATION, _OK, _UNDECIDED, _BAD_INPUT = 0, 1, -1, -2
(_W_KEY, _W_UNKNOWN, _W_TWICE, _W_BEFORE_ADD, _W_FIFO, _W_LIFO, _W_EMPTY, _W_FIFO_LOST,
 _W_STACK) = range(1, 10)


class HistoryError(ValueError):
    """The history cannot be checked as given (one line: what is wrong, and what to do)."""


def kind_of(keyed: bool, lifo: bool) -> str:
    """The kind to check a registered structure as, from its metadata (pipeline.ds.Meta:
    keyed, lifo): keyed structures are maps, LIFO ones stacks, the rest FIFO queues."""
    if keyed:
        return "map"
    return "stack" if lifo else "queue"


@dataclass(frozen=True)
class Record:
    """One operation of the history, as recorded."""

    index: int
    t_inv: int
    t_resp: int
    key: int
    value: int
    agent: int
    op: int
    result: int

    @classmethod
    def at(cls, records: bytes | bytearray | memoryview, index: int) -> Record:
        return cls(index, *RECORD.unpack_from(records, index * RECORD_SIZE)[:7])

    @property
    def agent_name(self) -> str:
        if self.agent & KERNEL_AGENT:
            return f"kernel {self.agent & ~KERNEL_AGENT}"
        return f"user {self.agent >> 8}/{self.agent & 0xFF}"

    def describe(self, t0: int = 0, keyed: bool = True) -> str:
        op = OP_NAMES.get(self.op, str(self.op))
        res = RESULT_NAMES.get(self.result, str(self.result))
        if not keyed:
            call = f"{op}({self.key})" if self.op == OP_INSERT else f"{op}()"
            out = f" -> {res}" + (f" {self.key}" if self.op == OP_POP and self.result == OK
                                  else "")
        elif self.op == OP_INSERT:
            call, out = f"insert({self.key}, {self.value})", f" -> {res}"
        else:
            call = f"{op}({self.key})" if self.op != OP_POP else "pop()"
            got = (f" {self.value}" if self.op != OP_POP else f" {self.key}, {self.value}")
            out = f" -> {res}" + (got if self.result == OK else "")
        return (f"#{self.index} {self.agent_name}: {call}{out} "
                f"[{self.t_inv - t0}, {self.t_resp - t0}] ns")


@dataclass(frozen=True)
class LinResult:
    """The verdict. `ok`: a linearization exists. `undecided`: the search budget ran out
    (neither proven nor refuted). For a violation, `reason` says why in one line and
    `operations` are the records it names; `t0` is the earliest invocation in the
    history, from which the explanations count times."""

    kind: str
    ok: bool
    checked: int
    ignored: int
    unchecked: int = 0
    undecided: bool = False
    partitions: int = 0
    steps: int = 0
    key: int | None = None
    reason: str = ""
    operations: tuple[Record, ...] = field(default=())
    t0: int = 0

    def explain(self) -> str:
        """The verdict in words: one line, and a line per operation named."""
        if self.ok:
            head = f"linearizable: {self.checked} operations checked as a {self.kind}"
            if self.ignored:
                head += f", {self.ignored} without effect left out"
            if self.unchecked:
                head += f", {self.unchecked} pops checked only as deletes of their key"
            return head
        keyed = self.kind in ("map", "set")
        lines = [("undecided: " if self.undecided else "not linearizable: ") + self.reason]
        lines += ["  " + r.describe(self.t0, keyed) for r in self.operations]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "ok": self.ok, "undecided": self.undecided,
                "checked": self.checked, "ignored": self.ignored, "unchecked": self.unchecked,
                "partitions": self.partitions, "steps": self.steps, "key": self.key,
                "reason": self.reason,
                "operations": [r.describe(self.t0, self.kind in ("map", "set"))
                               for r in self.operations]}


def _t0(records: memoryview) -> int:
    n = len(records) // RECORD_SIZE
    if not n:
        return 0
    return min(int(t) for (t,) in struct.iter_unpack("<Q32x", records))


def _keyed_reason(kind: str, out: dict[str, Any], recs: tuple[Record, ...]) -> str:
    state = (("present" if kind == "set" else f"holds {out['state_value']}")
             if out["state_present"] else "absent")
    where = (f"key {out['key']}: no order of its {out['key_ops']} operations is a legal "
             f"{kind} history; the longest prefix that has one takes {out['prefix']} of them "
             f"and leaves the key {state}")
    if recs:
        where += (f"; then #{recs[0].index} cannot take effect (after the ones listed below "
                  "it, latest first)")
    return where


def _seq_reason(kind: str, out: dict[str, Any], recs: tuple[Record, ...]) -> str:
    w, v = out["what"], out["key"]
    add, rem = ("push", "pop") if kind == "stack" else ("enqueue", "dequeue")
    ix = [f"#{r.index}" for r in recs]
    if w == _W_UNKNOWN:
        return f"value {v} was {rem}d by {ix[0]} but never {add}d"
    if w == _W_TWICE:
        return f"value {v} was {rem}d twice, by {ix[0]} and {ix[1]}"
    if w == _W_BEFORE_ADD:
        return f"value {v} was {rem}d by {ix[1]}, which returned before its {add} {ix[0]} began"
    if w == _W_FIFO:
        u, vv = recs[0].key, recs[1].key
        return (f"FIFO order: {u} was enqueued ({ix[0]}) before {vv} ({ix[1]}) began, but {vv} "
                f"was dequeued ({ix[2]}) before the dequeue of {u} ({ix[3]}) began")
    if w == _W_FIFO_LOST:
        u, vv = recs[0].key, recs[1].key
        return (f"FIFO order: {u} was enqueued ({ix[0]}) before {vv} ({ix[1]}) began, {vv} was "
                f"dequeued ({ix[2]}) but {u} never was")
    if w == _W_LIFO:
        u, vv = recs[0].key, recs[1].key
        tail = (f"{vv}'s pop ({ix[3]}) began after {u}'s pop ({ix[2]}) ended" if len(recs) > 3
                else f"{u} was popped ({ix[2]}) and {vv} never was")
        return (f"LIFO order: {vv} was pushed ({ix[1]}) after {u}'s push ({ix[0]}) and before "
                f"{u} could have been popped, so {vv} must come out first, but {tail}")
    if w == _W_STACK:
        where = (f"no order of the {out['key_ops']} operations is a legal stack history (no "
                 f"single pair of values shows it: the search decided); the longest prefix "
                 f"that has one takes {out['prefix']} of them")
        if recs:
            where += (f"; then {ix[0]} cannot take effect (after the ones listed below it, "
                      "latest first)")
        return where
    if w == _W_EMPTY:
        inside = sorted({r.key for r in recs[1:]})
        return (f"{ix[0]} answered empty, but throughout its interval the structure certainly "
                f"held a value (one of {', '.join(map(str, inside))}: added before, removed "
                f"after)")
    return f"violation {w}"


def _initial(initial: Mapping[int, int] | None) -> array[int] | None:
    if not initial:
        return None
    flat = array("Q")
    for k in sorted(initial):
        flat.append(k)
        flat.append(initial[k])
    return flat


def check(kind: str, records: bytes | bytearray | memoryview, *,
          initial: Mapping[int, int] | None = None, budget: int = DEFAULT_BUDGET) -> LinResult:
    """Check a history. kind: "map", "set", "queue" or "stack". initial (maps and sets):
    the keys present, with their values, before the first record. budget (maps and sets):
    search steps allowed on one key before giving up as undecided (0: no limit).
    Raises HistoryError for a history that cannot be checked (not whole records, a
    response before its invocation, an operation the kind does not have, a value added
    twice to a queue or stack)."""
    if kind not in KINDS:
        raise HistoryError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    if budget < 0:
        raise HistoryError(f"budget {budget} is negative; 0 means no limit")
    view = memoryview(records).cast("B")
    if len(view) % RECORD_SIZE:
        raise HistoryError(f"{len(view)} bytes is not a whole number of {RECORD_SIZE}-byte "
                           "records (include/ds/history.h)")
    if kind in ("map", "set"):
        out = _linearize.check_keyed(view, kind == "set", _initial(initial), budget)
    else:
        if initial:
            raise HistoryError("initial contents are only taken for maps and sets")
        out = _linearize.check_seq(view, kind == "stack", budget)
    verdict = out["verdict"]
    if verdict == _BAD_INPUT:
        raise HistoryError(f"{out['error']}")
    recs = tuple(Record.at(view, i) for i in out["records"])
    common: dict[str, Any] = {
        "kind": kind, "checked": out["checked"], "ignored": out["ignored"],
        "unchecked": out["unchecked"], "partitions": out["partitions"], "steps": out["steps"]}
    if verdict == _OK:
        return LinResult(ok=True, **common)
    if verdict == _UNDECIDED:
        keyed = kind in ("map", "set")
        return LinResult(ok=False, undecided=True, key=out["key"] if keyed else None,
                         t0=_t0(view),
                         reason=(f"key {out['key']}: " if keyed else "")
                         + f"the search budget of {budget} steps ran out before a "
                         "linearization was found or ruled out", **common)
    keyed = kind in ("map", "set")
    reason = _keyed_reason(kind, out, recs) if keyed else _seq_reason(kind, out, recs)
    key = out["key"] if keyed or out["what"] != _W_EMPTY else None
    return LinResult(ok=False, key=key, reason=reason, operations=recs, t0=_t0(view), **common)


def pack(records: list[tuple[int, int, int, int, int, int, int]]) -> bytes:
    """A history from (t_inv, t_resp, key, value, agent, op, result) tuples."""
    return b"".join(RECORD.pack(*r, 0) for r in records)
