"""Which sink classes exist: the built-ins, plus plugins from the entry-point group
"arena_pipeline.sinks" (name = sink name, value = "module:Class").

Built-ins are looked up without touching plugins, so a broken third-party package can never
stop `stdout` from working; a plugin is imported only when asked for by name, or when
available() lists everything. A built-in name cannot be taken over by a plugin.
"""

from __future__ import annotations

import importlib.metadata

from pipeline.sinks.base import Sink, SinkError
from pipeline.sinks.jsonl import JsonlSink
from pipeline.sinks.socket import SocketSink
from pipeline.sinks.stdout import StdoutSink

GROUP = "arena_pipeline.sinks"
BUILTINS: dict[str, type[Sink]] = {cls.name: cls for cls in (StdoutSink, JsonlSink, SocketSink)}


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    try:
        found = importlib.metadata.entry_points(group=GROUP)
    except Exception as e:  # broken metadata of some installed package
        raise SinkError(
            f"cannot list sink plugins: {e}; repair or remove the broken package"
        ) from None
    return [ep for ep in found if ep.name not in BUILTINS]


def _load(ep: importlib.metadata.EntryPoint) -> type[Sink]:
    where = f"sink plugin {ep.name!r} ({ep.value}"
    dist = getattr(ep, "dist", None)
    where += f", from {dist.name})" if dist is not None else ")"
    try:
        obj = ep.load()
    except Exception as e:
        # One line whatever the plugin raised: the traceback belongs to the plugin's authors.
        first = str(e).splitlines()[0] if str(e) else ""
        raise SinkError(
            f"{where} cannot be loaded: {type(e).__name__}: {first}; "
            "reinstall or remove the package"
        ) from None
    if not (isinstance(obj, type) and issubclass(obj, Sink)):
        raise SinkError(f"{where} is not a Sink subclass; fix the entry point")
    if getattr(obj, "name", None) != ep.name or not isinstance(getattr(obj, "options", None), dict):
        raise SinkError(
            f"{where} must set name = {ep.name!r} and an options dict; fix the plugin"
        )
    return obj


def available() -> dict[str, type[Sink]]:
    """Every sink by name: built-ins first, then plugins (each imported now)."""
    sinks = dict(BUILTINS)
    for ep in _entry_points():
        sinks.setdefault(ep.name, _load(ep))
    return sinks


def get_sink_class(name: str) -> type[Sink]:
    if name in BUILTINS:
        return BUILTINS[name]
    eps = _entry_points()
    for ep in eps:
        if ep.name == name:
            return _load(ep)
    names = ", ".join(sorted({*BUILTINS, *(ep.name for ep in eps)}))
    raise SinkError(f"unknown sink {name!r}; available sinks: {names}")


def flag_providers() -> list[type[Sink]]:
    """The sink classes whose command-line flags the run's parser adds: the built-ins, then
    every plugin that loads. A plugin that does not load is left out here, so that --help
    and the other sinks still work; naming it with --sink reports why (get_sink_class)."""
    classes = list(BUILTINS.values())
    try:
        eps = _entry_points()
    except SinkError:
        return classes
    for ep in eps:
        try:
            classes.append(_load(ep))
        except SinkError:
            continue
    return classes
