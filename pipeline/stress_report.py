"""What a stress run measured, as one JSON-ready dict and as a table for people.

Per worker, per kernel thread and in total: operations, operations per second,
failures by result code per operation kind; latency percentiles from the
sampled per-operation timings the C loop took (one operation in 64); arena
memory: in use, high-water mark (sampled while running), pages populated and
returned, and the reclamation backlog (retired, not yet freed).
"""

from __future__ import annotations

import signal
from array import array
from collections.abc import Iterable
from typing import Any

from .ds import Result
from .stress_agents import SAMPLE_SHIFT
from .stress_run import Outcome

KINDS = ("insert", "delete", "search", "pop")
PCTS = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p99.9", 0.999))


def _code(c: int) -> str:
    try:
        return Result(c).name
    except ValueError:
        return str(c)


def failures(results: Iterable[list[list[int]]]) -> dict[str, dict[str, int]]:
    """Per kind, per result code other than OK, summed over the given run_loop results."""
    out: dict[str, dict[str, int]] = {}
    for res in results:
        for kind, codes in zip(KINDS, res, strict=True):
            for code, n in enumerate(codes):
                if code and n:
                    d = out.setdefault(kind, {})
                    d[_code(code)] = d.get(_code(code), 0) + n
    return out


def latency(samples: Iterable[bytes]) -> dict[str, int] | None:
    a = array("I")
    for s in samples:
        a.frombytes(s)
    if not a:
        return None
    xs = sorted(a)
    out = {name: xs[min(len(xs) - 1, int(q * len(xs)))] for name, q in PCTS}
    out["max"] = xs[-1]
    out["samples"] = len(xs)
    return out


def _rate(ops: int, ns: int) -> int:
    return round(ops * 1e9 / ns) if ns else 0


def _worker(out: Outcome, w: Any) -> dict[str, Any]:
    role = {0: "keyed", 1: "producer", 2: "consumer"}[w.spec.threads[0].role]
    entry: dict[str, Any] = {"worker": w.spec.index + 1, "pid": w.proc.pid, "role": role,
                             "threads": len(w.spec.threads)}
    if w.result is None:
        code = w.proc.exitcode
        how = (f"killed by {signal.Signals(-code).name}" if code is not None and code < 0
               else f"exited with {code}")
        progress = sum(int(out.control[8 + t.slot * 8]) for t in w.spec.threads)
        entry.update(status=how, ops=progress, ops_per_s=None)
        return entry
    errs = [t["error"] for t in w.result if "error" in t]
    if errs:
        entry.update(status="error: " + errs[0], ops=0, ops_per_s=0)
        return entry
    ops = sum(t["done"] for t in w.result)
    ns = max(t["ns"] for t in w.result)
    cpu = sum(t.get("cpu_ns", 0) for t in w.result)
    entry.update(status="ok", ops=ops, ops_per_s=_rate(ops, ns),
                 cpu_s=round(cpu / 1e9, 4), ops_per_cpu_s=_rate(ops, cpu),
                 failures=failures(t["results"] for t in w.result),
                 latency_ns=latency(t["samples"] for t in w.result),
                 per_thread=[{"thread": i, "ops": t["done"], "ops_per_s": _rate(t["done"], t["ns"]),
                              "failures": failures([t["results"]])}
                             for i, t in enumerate(w.result)])
    if any(t.get("out_of_memory") for t in w.result):
        entry["out_of_memory"] = True
    if any(t.get("stuck") for t in w.result):
        entry["stuck_busy"] = True
    return entry


def _kernel(out: Outcome) -> list[dict[str, Any]]:
    rows = []
    for i, (a, role) in enumerate(zip(out.kernel, out.kernel_roles, strict=True)):
        r = a.result
        fails: dict[str, dict[str, int]] = {}
        if role == "keyed":
            total = sum(r.ok) if hasattr(r, "ok") else 0
            if r.nomem and any(r.nomem):
                fails = {k: {"NOMEM": n} for k, n in zip(KINDS, r.nomem, strict=False) if n}
            failed = r.ops - total
        else:
            failed = r.failures
            if r.nomem:
                fails = {"insert": {"NOMEM": r.nomem}}
        rows.append({"thread": i + 1, "role": role, "ops": r.ops,
                     "ops_per_s": round(r.ops / r.seconds) if r.seconds else 0,
                     "mean_ns": round(r.seconds * 1e9 / r.ops) if r.ops else None,
                     "failed": failed, "failures": fails,
                     "nomem_calls": r.nomem_calls})
    # with a history every kernel agent has one, in the agents' order
    for row, h in zip(rows, out.kernel_history, strict=False):
        row["history_records"] = h.records
    return rows


def build(out: Outcome, checks: dict[str, Any] | None,
          lin: dict[str, Any] | None) -> dict[str, Any]:
    cfg = out.cfg
    workers = [_worker(out, w) for w in out.workers]
    kernel = _kernel(out)
    live = [w for w in out.workers if w.result and not any("error" in t for t in w.result)]
    user_ops = sum(w["ops"] for w in workers if w["ops"])
    user_ns = max((t["ns"] for w in live for t in w.result or []), default=0)
    kern_ops = sum(k["ops"] for k in kernel)
    user_cpu = sum(t.get("cpu_ns", 0) for w in live for t in w.result or [])
    heap = out.heap
    mem = {"bytes_in_use": heap.get("bytes_in_use", 0), "high_water_bytes": out.high_water,
           "pages_in_use": heap.get("pages_in_use", 0),
           "pages_populated": heap.get("pages_populated", 0),
           "pages_returned": heap.get("pages_returned"),
           "allocation_failures": heap.get("failures", 0),
           "reclamation_backlog": out.epoch.get("pending", 0),
           "epoch_expired": out.epoch.get("expired", 0)}
    total_fail = failures(t["results"] for w in live for t in w.result or [])
    for k in kernel:
        for kind, codes in k["failures"].items():
            for code, n in codes.items():
                d = total_fail.setdefault(kind, {})
                d[code] = d.get(code, 0) + n
    res: dict[str, Any] = {
        "structure": cfg.structure,
        "workload": cfg.workload or ("mixed" if cfg.meta.keyed else "produce-consume"),
        "mix": dict(zip(("insert", "delete", "search"), cfg.mix(), strict=True))
        if cfg.meta.keyed else None,
        "keys": cfg.keys if cfg.meta.keyed else None,
        "distribution": cfg.distribution, "seed": cfg.seed,
        "workers": cfg.workers, "threads": cfg.threads, "kernel_threads": cfg.kernel_threads,
        "operations": cfg.operations, "duration": cfg.duration,
        "seconds": round(out.seconds, 3),
        "total": {"ops": user_ops + kern_ops,
                  "ops_per_s": round((user_ops + kern_ops) / out.seconds) if out.seconds else 0,
                  "failures": total_fail},
        "user": {"ops": user_ops, "ops_per_s": _rate(user_ops, user_ns),
                 # CPU time the loops had against their wall time: below the thread
                 # count, the machine (other processes) took CPU from the run
                 "cpu_s": round(user_cpu / 1e9, 4),
                 "cpus_used": round(user_cpu / user_ns, 3) if user_ns else 0,
                 "ops_per_cpu_s": _rate(user_ops, user_cpu),
                 "latency_ns": latency(t["samples"] for w in live for t in w.result or []),
                 "latency_sampling": f"1 in {1 << SAMPLE_SHIFT}"},
        "kernel": {"ops": kern_ops},
        "per_worker": workers,
        "per_kernel_thread": kernel,
        "dead_workers": [w["worker"] for w in workers if w["status"].startswith(("killed",
                                                                                  "exited"))],
        "memory": mem,
        "checks": checks,
        "linearizability": lin,
    }
    ok = not out.timed_out and not any(w["status"].startswith("error") for w in workers)
    if checks is not None:
        ok = ok and all(checks["invariants"].values())
    if lin is not None and "ok" in lin:
        ok = ok and bool(lin["ok"])
    res["ok"] = ok
    return res


def _n(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, int) and x >= 10_000:
        return f"{x:,}"
    return str(x)


def _fails(f: dict[str, dict[str, int]] | None) -> str:
    if not f:
        return "-"
    return "; ".join(f"{k} " + ", ".join(f"{c} {_n(n)}" for c, n in codes.items())
                     for k, codes in f.items())


def table(r: dict[str, Any]) -> str:
    """The human report."""
    lines = [f"stress {r['structure']}: {r['workload']}"
             + (f" {r['mix']}" if r["mix"] else "")
             + (f", keys {r['keys']} {r['distribution']}" if r["keys"] else "")
             + f", {r['workers']} worker(s) x {r['threads']} thread(s), "
               f"{r['kernel_threads']} kernel thread(s), {r['seconds']} s, seed {r['seed']}"]
    rows = [("agent", "role", "status", "ops", "ops/s", "failures")]
    for w in r["per_worker"]:
        rows.append((f"worker {w['worker']}", w["role"], w["status"], _n(w["ops"]),
                     _n(w["ops_per_s"]), _fails(w.get("failures"))))
    for k in r["per_kernel_thread"]:
        rows.append((f"kernel {k['thread']}", k["role"], "ok", _n(k["ops"]), _n(k["ops_per_s"]),
                     _fails(k["failures"])))
    rows.append(("total", "", "", _n(r["total"]["ops"]), _n(r["total"]["ops_per_s"]),
                 _fails(r["total"]["failures"])))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        lines.append("  " + "  ".join(c.ljust(widths[i]) if i < 3 else c.rjust(widths[i])
                                      for i, c in enumerate(row[:5])) + "  " + row[5])
    lat = r["user"]["latency_ns"]
    if lat:
        lines.append("  user latency ns (" + r["user"]["latency_sampling"] + "): "
                     + ", ".join(f"{k} {_n(lat[k])}" for k in ("p50", "p90", "p99", "p99.9",
                                                              "max")))
    m = r["memory"]
    lines.append(f"  arena: {_n(m['bytes_in_use'])} bytes in use, high-water "
                 f"{_n(m['high_water_bytes'])}, pages populated {_n(m['pages_populated'])}, "
                 f"returned {_n(m['pages_returned'])}, reclamation backlog "
                 f"{_n(m['reclamation_backlog'])}")
    if r["dead_workers"]:
        lines.append(f"  dead workers: {', '.join(map(str, r['dead_workers']))} "
                     "(checked on what the others did)")
    if r["checks"]:
        hidden = r["checks"].get("hidden_values_of_live_producers")
        if hidden is not None:
            lines.append(f"  the queue stops at a push a killed producer never linked: "
                         f"{_n(hidden)} values of the live producers are behind it")
        for name, ok in r["checks"]["invariants"].items():
            lines.append(f"  {'ok  ' if ok else 'FAIL'} {name}")
    lin = r["linearizability"]
    if lin:
        if "ok" in lin:
            lines.append(f"  {'ok  ' if lin['ok'] else 'FAIL'} linearizable "
                         f"({_n(lin['records'])} records)")
        else:
            lines.append(f"  --   linearizability not checked: {lin['skipped']}")
    lines.append("  result: " + ("ok" if r["ok"] else "FAILED"))
    return "\n".join(lines) + "\n"
