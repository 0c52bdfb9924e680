"""`python -m pipeline stress STRUCTURE [FLAGS]`: user worker processes and kernel
threads on one arena structure at once, at the structure's speed, checked after the
run.

The timed loop of each user thread is C (DsArena.run_loop): it draws its operations
itself, records what verification needs into buffers as it goes (per-key counters
shared with the driver, popped values, optionally a history of every operation) and
times one operation in 64. The checks (-v, --check-linearizability) run on those
buffers once every agent has stopped. Prints a table (or JSON with --format json);
exit 1 when a check fails, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from . import safefs
from .errors import ConfigError
from .log import get
from .stress_config import StressConfig, load
from .stress_config import add_arguments as _add_arguments
from .stress_report import build, table
from .stress_run import Outcome, Progress, run
from .stress_verify import check_history, dead_agents, history, keyed, queue

log = get(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("User worker processes and kernel threads on one arena structure at "
                     "once, timed in C, checked after the run (-v, --check-linearizability).")
    _add_arguments(p)


def _open_out(path: str, what: str) -> int:
    """A file to write as root: its directory walked without following another user's
    links, the file opened with O_NOFOLLOW and required to be our own regular file."""
    d, name = os.path.split(os.path.abspath(path))
    try:
        dfd = safefs.open_dir(d)
        try:
            fd, _ = safefs.open_append(dfd, name, 0o644)
        finally:
            os.close(dfd)
    except safefs.Refused as e:
        raise ConfigError(f"stress: {what} {path}: {e}") from None
    except OSError as e:
        raise ConfigError(f"stress: cannot write {what} {path}: "
                          f"{os.strerror(e.errno or 0)}") from None
    os.ftruncate(fd, 0)
    return fd


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
    os.close(fd)


@contextmanager
def _progress(cfg: StressConfig) -> Iterator[Callable[[Progress], None] | None]:
    """A progress bar on stderr once the run has lasted a second; none when stderr is not
    a terminal."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress as Bar
    from rich.progress import TextColumn, TimeElapsedColumn

    bar = Bar(TextColumn("stress {task.description}"), TimeElapsedColumn(),
              TextColumn("{task.fields[ops]} ops, {task.fields[rate]} ops/s, "
                         "arena {task.fields[mem]}"),
              console=Console(file=sys.stderr), transient=True)
    task = None
    started = False

    def update(p: Progress) -> None:
        nonlocal started, task
        if p.seconds < 1.0:
            return
        if task is None:
            task = bar.add_task(cfg.structure, ops="0", rate="0", mem="0 MiB")
            bar.start()
            started = True
        bar.update(task, ops=f"{p.ops:,}", rate=f"{p.ops / p.seconds:,.0f}",
                   mem=f"{p.bytes_in_use / (1 << 20):.1f} MiB")

    try:
        yield update
    finally:
        if started:
            bar.stop()


def _checks(out: Outcome) -> dict[str, Any]:
    return keyed(out) if out.cfg.meta.keyed else queue(out)


def main(args: argparse.Namespace) -> int:
    cfg = load(args)
    json_fd = _open_out(cfg.json, "--json") if cfg.json else None
    hist_fd = _open_out(cfg.history, "--history") if cfg.history else None
    with _progress(cfg) as cb:
        out = run(cfg, cb)
    checks = _checks(out) if cfg.verify else None
    lin: dict[str, Any] | None = None
    if cfg.check_linearizability or hist_fd is not None:
        records = history(out)
        if hist_fd is not None:
            _write(hist_fd, records)
        if cfg.check_linearizability:
            dead = dead_agents(out.workers)
            if dead:
                lin = {"skipped": f"worker {', '.join(map(str, dead))} was killed: its "
                                  "history is lost", "records": len(records) // 40}
            else:
                lin = check_history(cfg.meta, records)
    report = build(out, checks, lin)
    text = json.dumps(report)
    if cfg.format == "json":
        sys.stdout.write(text + "\n")
    else:
        sys.stdout.write(table(report))
    sys.stdout.flush()
    if json_fd is not None:
        _write(json_fd, (text + "\n").encode())
    if not report["ok"]:
        failed = [k for k, ok in (checks or {}).get("invariants", {}).items() if not ok]
        if lin and lin.get("ok") is False:
            failed.append("linearizability")
        log.error("stress: check failed: %s", "; ".join(failed) or "an agent failed")
        return 1
    return 0
