"""Sinks: where the pipeline's JSON lines go (stdout, a jsonl file, a socket, or a plugin).

The interface is in `base`, the lookup by name in `registry`; docs/sinks.md describes both.
The registry is imported lazily: importing this package (the CLI does, for SinkError) must
not pull in the sinks' dependencies before the CLI has checked privileges and config.
"""

from __future__ import annotations

from pipeline.sinks.base import REQUIRED, Batch, Option, Sink, SinkError, SinkStats


def get_sink_class(name: str) -> type[Sink]:
    from pipeline.sinks.registry import get_sink_class as lookup

    return lookup(name)


def available() -> dict[str, type[Sink]]:
    from pipeline.sinks.registry import available as all_sinks

    return all_sinks()


__all__ = [
    "REQUIRED",
    "Batch",
    "Option",
    "Sink",
    "SinkError",
    "SinkStats",
    "available",
    "get_sink_class",
]
