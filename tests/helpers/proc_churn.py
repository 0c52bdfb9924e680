"""Short-lived processes under a process table: the pools its fork tracepoint allocates
from are refilled meanwhile, as a run's refill task does."""

from __future__ import annotations

import subprocess
import threading
import time
from typing import Any


def churn(arena: Any, argv_of: Any, n: int) -> list[int]:
    """Runs argv_of(i) to its end for i in range(n), one at a time, while a thread refills
    the table's pools every 20 ms; returns the pids."""
    stop = threading.Event()

    def refill() -> None:
        table = arena.lookup("proc")
        while not stop.is_set():
            table.refill()
            time.sleep(0.02)

    r = threading.Thread(target=refill, daemon=True)
    r.start()
    pids = []
    try:
        for i in range(n):
            p = subprocess.Popen(argv_of(i))
            p.wait()
            pids.append(p.pid)
    finally:
        stop.set()
        r.join()
    return pids
