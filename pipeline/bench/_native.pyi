"""Types of pipeline.bench._native, the native benchmarks' C extension module
(pipeline/bench/_native/)."""

from typing import Any

from pipeline._coreerror import CoreError as CoreError

# transport.c: the arena queue against a BPF ring buffer (pipeline/bench/transport.py)
def bench_arena(events: int, per_call: int = ..., prod_cpu: int = ..., cons_cpu: int = ...,
                arena_pages: int = ..., queue_capacity: int = ...) -> dict[str, Any]: ...
def bench_ringbuf(events: int, per_call: int = ..., ring_bytes: int = ..., prod_cpu: int = ...,
                  cons_cpu: int = ...) -> dict[str, Any]: ...

# dsbench.c: the data-structure benchmark (pipeline/bench/ds.py)
def dsbench_hash(keys: int = ..., per_call: int = ...) -> dict[str, Any]: ...
def dsbench_queues(names: list[str] | tuple[str, ...], items: int = ..., samples: int = ...,
                   per_call: int = ..., capacity: int = ..., prod_cpu: int = ...,
                   cons_cpu: int = ...) -> dict[str, dict[str, Any]]: ...
def dsbench_queue_names() -> list[str]: ...
