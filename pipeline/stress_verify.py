"""The checks of a stress run (-v), on what the agents recorded, after the run.

- Keyed structures: for every key of the shared space, the successful inserts
  minus the successful deletes of every user agent (with the prefill) is 0 or 1
  and equals the key's presence at the end; each kernel agent's range equals its
  model; every value found or left equals its key; the structure's verify agrees.
  Kernel agents that recorded a history worked on the shared keys: their records'
  successful inserts and deletes count in each key's total, and the values their
  searches and deletes returned must equal the keys too.
  The key a killed worker was changing may or may not have been changed: it is
  left out, and so named in the report.
- Queues and stacks: every value produced comes out exactly once (consumers and
  the final drain) and, for FIFO structures, each consumer sees each producer's
  values in order; for LIFO structures the final drain, run quiescent, gives each
  producer's values newest first. Values of a killed producer must be a prefix
  of its sequence; a killed consumer's pops are lost with it, so then a value may
  be missing but none may come out twice.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from typing import Any

from .ds import Meta, Op, Result
from .pool import SEQ_BITS, KeyedResult, QueueResult
from .stress_agents import CTL_SLOT0, ROLE_CONSUMER, ROLE_PRODUCER, SLOT_INFLIGHT, SLOT_WORDS
from .stress_run import Outcome


def keyed(out: Outcome) -> dict[str, Any]:
    cfg = out.cfg
    dead = [w for w in out.workers if w.result is None]
    doubtful = sorted({out.control[CTL_SLOT0 + t.slot * SLOT_WORDS + SLOT_INFLIGHT]
                       for w in dead for t in w.spec.threads} - {0})
    found = dict(out.final_items)
    user_found = {k for k in found if 1 <= k <= cfg.keys}
    net = out.net if out.net is not None else array("i", bytes(4 * cfg.keys))
    net = array("i", net)
    kernel_bad = _kernel_net(out, net)
    skip = set(doubtful)
    bad_net = 0
    mismatch = 0
    for i, n in enumerate(net):
        k = i + 1
        if k in skip:
            continue
        if n not in (0, 1):
            bad_net += 1
        if (n == 1) != (k in user_found):
            mismatch += 1
    kern: list[KeyedResult] = [a.result for a in out.kernel]
    want_kernel: set[int] = set()
    for r in kern:
        a = array("Q")
        a.frombytes(r.keys)
        want_kernel.update(a)
    got_kernel = set(found) - user_found
    bad_values = kernel_bad + sum(t.get("bad_values", 0) for w in out.workers if w.result
                                  for t in w.result)
    v = out.verify
    kv = out.verify_kernel
    # a kernel call takes a little arena memory for its counters: in a full arena the
    # kernel's verify cannot start (NOMEM) and the user-side one stands alone
    kernel_agrees = kv is None or (kv.ok and kv.count == v.count) or kv.result == 3
    inv = {
        "per key, inserts minus deletes is 0 or 1": bad_net == 0,
        "final key set equals inserts minus deletes": mismatch == 0,
        "kernel agents' ranges equal their models": got_kernel == want_kernel
        and all(r.mismatches == 0 for r in kern),
        "every value found or left equals its key": bad_values == 0
        and all(k == val for k, val in found.items()),
        "verify ok and counts agree": v.ok and v.count == len(found) and kernel_agrees,
    }
    return {"invariants": inv, "final_keys": len(found), "keys_left_out": doubtful,
            "key_mismatches": mismatch, "bad_values": bad_values, "verify": v.__dict__,
            "verify_kernel": kv.__dict__ if kv is not None else None}


def _kernel_net(out: Outcome, net: array[int]) -> int:
    """Adds the kernel agents' recorded successful inserts (+1) and deletes (-1) on the
    shared keys to net; returns how many of their searches and deletes found a value
    other than the key."""
    import struct

    insert, delete, search, ok = Op.INSERT, Op.DELETE, Op.SEARCH, Result.OK
    bad = 0
    for h in out.kernel_history:
        for _, _, key, value, _, op, res, _ in struct.iter_unpack("<QQQQIBBH", h.data()):
            if res != ok or not 1 <= key <= len(net):
                continue
            if op == insert:
                net[key - 1] += 1
            elif op in (delete, search):
                net[key - 1] -= op == delete
                bad += value != key
    return bad


def queue(out: Outcome) -> dict[str, Any]:
    cfg = out.cfg
    pushed: dict[int, int | None] = {}
    consumers: list[QueueResult] = []
    lost_consumer = False
    for w in out.workers:
        for i, t in enumerate(w.spec.threads):
            r = w.result[i] if w.result else None
            if t.role == ROLE_PRODUCER:
                pushed[t.producer] = int(r["pushed"]) if r else None
            elif t.role == ROLE_CONSUMER:
                if r is None:
                    lost_consumer = True
                else:
                    consumers.append(QueueResult(popped=r["popped"]))
    from .stress_run import KERNEL_PRODUCER_BASE

    kp = 0
    for a, role in zip(out.kernel, out.kernel_roles, strict=True):
        if role == "producer":
            pushed[KERNEL_PRODUCER_BASE + kp] = a.result.pushed
            kp += 1
        else:
            consumers.append(a.result)
    # A producer killed mid-push (mpsc: between its exchange and its link; mpmc: between
    # claiming its cell and publishing it) hides everything pushed after it: the final
    # drain stops there, BUSY for good.
    hidden = out.drain_stuck and any(n is None for n in pushed.values())
    drain = QueueResult(popped=out.drained.tobytes())
    inv = invariants(cfg.meta, pushed, consumers, drain, lost_consumer, hidden)
    v = out.verify
    if out.drain_stuck and not hidden:
        inv["the final drain reached the end"] = False
    if not out.drain_stuck:
        inv["empty at the end"] = v.ok and v.count == 0
    res = {"invariants": inv,
           "pushed": sum(n for n in pushed.values() if n is not None),
           "popped_by_consumers": sum(len(c.popped) // 8 for c in consumers),
           "left_at_end": len(out.drained), "final_drain_stuck": out.drain_stuck,
           "verify": v.__dict__}
    if hidden:
        res["hidden_values_of_live_producers"] = hidden_count(pushed, (*consumers, drain))
    return res


def hidden_count(pushed: dict[int, int | None], popped: Sequence[QueueResult]) -> int:
    """Values pushed by producers whose count is known that nobody popped: what a
    killed producer's unlinked push hid of the others' (its own count is not known)."""
    known = {p: n for p, n in pushed.items() if n is not None}
    out = 0
    for c in popped:
        out += sum(1 for v in _values(c.popped) if v >> SEQ_BITS in known)
    return sum(known.values()) - out


def _values(raw: bytes) -> array[int]:
    a = array("Q")
    a.frombytes(raw)
    return a


def invariants(meta: Meta, pushed: dict[int, int | None], consumers: Sequence[QueueResult],
               drain: QueueResult, lost_consumer: bool = False,
               hidden: bool = False) -> dict[str, bool]:
    """pushed: values per producer id (None: the producer was killed, its count is not
    known); consumers: what each popped, in order; drain: what was left, popped by one
    thread once every agent had stopped. hidden: a killed producer's unlinked push hid
    the rest of the queue, so each producer's values out are a prefix of its sequence."""
    mask = (1 << SEQ_BITS) - 1
    seen: dict[int, list[int]] = {p: [] for p in pushed}
    stray = 0
    fifo_ok = True
    for c in (*consumers, drain):
        last: dict[int, int] = {}
        for v in _values(c.popped):
            p, i = v >> SEQ_BITS, v & mask
            if p not in seen:
                stray += 1
                continue
            seen[p].append(i)
            if last.get(p, -1) >= i:
                fifo_ok = False
            last[p] = i
    once = stray == 0
    for p, n in pushed.items():
        got = sorted(seen[p])
        if len(set(got)) != len(got):
            once = False
        elif lost_consumer:
            once = once and all(0 <= i < (n if n is not None else (got[-1] + 1 if got else 0))
                                for i in got)
        elif hidden or n is None:
            once = once and got == list(range(len(got))) and (n is None or len(got) <= n)
        else:
            once = once and got == list(range(n))
    name = ("no value twice, each producer's a prefix (a killed producer's push hid the rest)"
            if hidden else
            "no value popped twice or unknown (a consumer was killed)" if lost_consumer
            else "every value popped exactly once")
    inv = {name: once}
    if meta.fifo:
        inv["per-producer FIFO at every consumer"] = fifo_ok
    if meta.lifo:
        # Concurrent pops of a stack may meet a producer's values in any sequence
        # order; what is left once everyone stops keeps push order, newest on top.
        newer: dict[int, int] = {}
        lifo_ok = True
        for v in _values(drain.popped):
            p, i = v >> SEQ_BITS, v & mask
            if newer.get(p, i + 1) <= i:
                lifo_ok = False
            newer[p] = i
        inv["final drain per-producer LIFO"] = lifo_ok
    return inv


def history(out: Outcome) -> bytes:
    """Every record, the driver's prefill and drain included."""
    parts: list[bytes] = [out.prefill_history]
    for w in out.workers:
        for t in w.result or []:
            parts.append(t.get("history") or b"")
    parts.extend(h.data() for h in out.kernel_history)
    parts.append(out.drain_history)
    return b"".join(parts)


def check_history(meta: Meta, records: bytes) -> dict[str, Any]:
    """The linearizability checker (pipeline.linearize) on the run's history: a map for
    keyed structures, a stack for LIFO ones, a queue for the rest."""
    from .linearize import HistoryError, check, kind_of

    n = len(records) // 40
    try:
        result = check(kind_of(meta.keyed, meta.lifo), records)
    except HistoryError as e:
        # a history the checker cannot take is a failed check, never a pass
        return {"ok": False, "records": n, "result": {"error": str(e)}}
    detail = {k: _plain(v) for k, v in vars(result).items() if v is not None}
    return {"ok": result.ok, "records": n, "result": detail}


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (int, float, str, bool)) or x is None:
        return x
    return str(x)


def dead_agents(workers: Iterable[Any]) -> list[int]:
    return [w.spec.index + 1 for w in workers if w.result is None]
