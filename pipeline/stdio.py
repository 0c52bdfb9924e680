"""The standard file descriptors, checked before any subcommand opens anything.

A process started with fd 1 or fd 2 closed (`>&-`, `2>&-`) would hand that number to the first
file, socket or eventfd it opens: JSON lines would then go into an event loop's internal
descriptor (libuv asserts on closing it and aborts), and log lines printed "to stderr" would
land on stdout. So a closed or read-only fd 1 or fd 2 stops every subcommand at once with
exit 2, and a closed fd 0 is pointed at /dev/null so that no later file takes its number.

The interpreter sets sys.__stdout__ / sys.__stderr__ to None when the descriptor was closed
when it started; that is checked too, because a module imported since may already hold the
number.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys

from .errors import EXIT_BAD_INPUT


def _writable(fd: int) -> bool:
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    except OSError:
        return False
    return (flags & os.O_ACCMODE) != os.O_RDONLY


def _plug_stdin() -> None:
    try:
        os.fstat(0)
        return
    except OSError:
        pass
    fd = os.open(os.devnull, os.O_RDONLY)  # the lowest free number: 0
    if fd != 0:
        os.dup2(fd, 0, inheritable=True)
        os.close(fd)
    else:
        os.set_inheritable(0, True)  # children expect a standard input too


def check_stdio() -> int | None:
    """None when fd 1 and fd 2 can be written; else the exit status (after one line on
    stderr if stderr is usable)."""
    if sys.__stderr__ is None or not _writable(2):
        return EXIT_BAD_INPUT  # nobody to tell, and nothing may be printed on stdout instead
    if sys.__stdout__ is None or not _writable(1):
        state = "closed" if sys.__stdout__ is None or not _open(1) else "open read-only"
        line = (f"pipeline: stdout (fd 1) is {state}; give it somewhere to write, such as "
                "a file, a pipe or >/dev/null\n")
        with contextlib.suppress(OSError):
            os.write(2, line.encode())
        return EXIT_BAD_INPUT
    _plug_stdin()
    return None


def _open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def to_devnull(fd: int) -> None:
    """Point `fd` at /dev/null: its reader is gone, and the interpreter's flush of what
    sys.stdout or sys.stderr still buffers at exit must not fail (it would turn the exit
    status into 120)."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        os.dup2(null, fd)
    except OSError:
        pass
    finally:
        os.close(null)


def stderr_line(line: str) -> None:
    """Write one line to stderr; if its reader has gone (`2>&1 | head`), there is nobody
    left to tell, and the run goes on."""
    err = sys.stderr
    if err is None:
        return
    try:
        err.write(line + "\n")
        err.flush()
    except (OSError, ValueError):
        to_devnull(2)
        with contextlib.suppress(OSError, ValueError):
            err.flush()  # what stayed in the buffer now goes to /dev/null
