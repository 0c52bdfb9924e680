"""Logging for every command: one handler, on stderr, each record one line
"pipeline: MESSAGE" (the prefix users and tests grep for).

Levels: -q shows warnings and errors only, the default adds what the run is doing
(the trigger chosen, "ready in ..."), -v adds debug output (and libbpf's own, which the
run turns on). A run's statistics are its result, so they are logged at RESULT, above
WARNING: -q keeps them.
"""

from __future__ import annotations

import logging

from .stdio import stderr_line

LOGGER = "pipeline"
RESULT = logging.WARNING + 5
logging.addLevelName(RESULT, "RESULT")

QUIET, NORMAL, VERBOSE = logging.WARNING, logging.INFO, logging.DEBUG


class _StderrLines(logging.Handler):
    """Writes through stdio.stderr_line: a reader of stderr that went away
    (`2>&1 | head`) stops the lines, not the run."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # a bad format argument: logging's own report, not a crash
            self.handleError(record)
            return
        stderr_line(" ".join(line.splitlines()))


def get(name: str = LOGGER) -> logging.Logger:
    """The package's logger, or a child of it (module loggers: get(__name__))."""
    return logging.getLogger(name)


def setup(level: int | None = NORMAL) -> None:
    """Install the one stderr handler on the package's logger; calling it again only
    changes the level (None: keeps it, NORMAL if none was set). Code used without the
    command line (a sink built by a program of its own) calls setup(None) before logging,
    so its lines carry the prefix too."""
    logger = logging.getLogger(LOGGER)
    if level is not None:
        logger.setLevel(level)
    elif logger.level == logging.NOTSET:
        logger.setLevel(NORMAL)
    logger.propagate = False  # the root logger's handlers (a host application's) stay out
    if not any(isinstance(h, _StderrLines) for h in logger.handlers):
        handler = _StderrLines()
        handler.setFormatter(logging.Formatter("pipeline: %(message)s"))
        logger.addHandler(handler)
