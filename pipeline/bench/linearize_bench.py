"""Linearizability checking throughput: operations checked per second on correct
100,000-operation histories of each kind (pipeline.linearize).

The histories are simulated: `agents` sequential agents each run operations one after
another, with random durations and gaps; every operation takes effect at a random point
inside its interval, and a sequential model applied in the order of those points gives
each operation its result. Such a history is linearizable by construction (the points
are a linearization), and its overlaps are those of `agents` threads. Nothing asserts a
time: the figures are for reading.

    python -m pipeline.bench.linearize_bench [--ops N] [--agents A] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import deque
from typing import Any

from ..linearize import KINDS, RECORD, check

OP_INSERT, OP_DELETE, OP_POP, OP_SEARCH = 1, 2, 3, 4
OK, NOT_FOUND, EXISTS = 0, 1, 2


def simulate(kind: str, ops: int, *, agents: int = 8, keys: int = 64, seed: int = 1,
             max_duration: int = 2000, max_gap: int = 500) -> bytes:
    """A linearizable history of `ops` operations (see the module's docstring). Maps and
    sets: inserts, deletes and searches on `keys` keys; queues and stacks: adds of
    distinct values and removes (empty answers included)."""
    rng = random.Random(seed)
    clock = [rng.randrange(max_gap + 1) for _ in range(agents)]
    timed: list[tuple[int, int, int, int]] = []  # (point, inv, resp, agent)
    for i in range(ops):
        a = i % agents
        inv = clock[a] + rng.randrange(max_gap + 1)
        resp = inv + rng.randrange(max_duration + 1)
        clock[a] = resp + 1
        timed.append((rng.randint(inv, resp), inv, resp, a))
    timed.sort()
    recs: list[bytes] = []
    if kind in ("map", "set"):
        state: dict[int, int] = {}
        for n, (_, inv, resp, a) in enumerate(timed):
            k, r = rng.randrange(keys), rng.random()
            if r < 0.4:
                res = EXISTS if k in state else OK
                val = n + 1
                if res == OK:
                    state[k] = val
                recs.append(RECORD.pack(inv, resp, k, val, a, OP_INSERT, res, 0))
            elif r < 0.7:
                got = state.pop(k, None)
                recs.append(RECORD.pack(inv, resp, k, got or 0, a, OP_DELETE,
                                        NOT_FOUND if got is None else OK, 0))
            else:
                got = state.get(k)
                recs.append(RECORD.pack(inv, resp, k, got or 0, a, OP_SEARCH,
                                        NOT_FOUND if got is None else OK, 0))
    else:
        items: deque[int] = deque()
        nextv = 1
        for _, inv, resp, a in timed:
            if rng.random() < 0.5:
                items.append(nextv)
                recs.append(RECORD.pack(inv, resp, nextv, 0, a, OP_INSERT, OK, 0))
                nextv += 1
            elif not items:
                recs.append(RECORD.pack(inv, resp, 0, 0, a, OP_POP, NOT_FOUND, 0))
            else:
                v = items.popleft() if kind == "queue" else items.pop()
                recs.append(RECORD.pack(inv, resp, v, 0, a, OP_POP, OK, 0))
    return b"".join(recs)


def run_linearize_bench(ops: int = 100_000, agents: int = 8, seed: int = 1,
                        rounds: int = 3) -> dict[str, Any]:
    """Per kind: operations checked per second (median of `rounds` checks of one history),
    and the verdict, which must be linearizable."""
    out: dict[str, Any] = {"ops": ops, "agents": agents, "kinds": {}}
    for kind in KINDS:
        history = simulate(kind, ops, agents=agents, seed=seed)
        times = []
        for _ in range(rounds):
            t = time.perf_counter()
            res = check(kind, history)
            times.append(time.perf_counter() - t)
        times.sort()
        best = times[len(times) // 2]
        out["kinds"][kind] = {"ok": res.ok, "checked": res.checked, "seconds": round(best, 4),
                              "ops_per_s": round(res.checked / best) if best > 0 else None,
                              "search_steps": res.steps}
    return out


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m pipeline.bench.linearize_bench",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--ops", type=int, default=100_000)
    p.add_argument("--agents", type=int, default=8)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    print(json.dumps(run_linearize_bench(args.ops, args.agents, args.seed), indent=2))


if __name__ == "__main__":
    main()
