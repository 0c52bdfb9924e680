"""stdout sink: JSON lines on file descriptor 1.

Each batch goes out with os.write, looping over partial writes, from a worker thread so that a
slow terminal or pipe stalls this sink and not the event loop. Bytes handed to os.write are
"delivered": for a pipe they sit in the pipe until the reader takes them.

A broken pipe (`... | head`) or any other write error fails the sink for good: one line on
stderr, the lines not written counted as dropped "write_failed", and fd 1 is pointed at
/dev/null so that the interpreter's own flush of sys.stdout at exit cannot print a traceback.
"""

from __future__ import annotations

import asyncio
import errno
import os
import select
from typing import Any, ClassVar

from pipeline.sinks.base import Batch, Option, Sink

STDOUT_FD = 1


def _write_all(fd: int, data: bytes) -> tuple[int, OSError | None]:
    """Write all of `data`; return (bytes written, the error that stopped it or None)."""
    view = memoryview(data)
    done = 0
    while done < len(view):
        try:
            done += os.write(fd, view[done:])
        except InterruptedError:
            continue
        except BlockingIOError:
            # fd 1 may be inherited non-blocking (shared with a parent); wait instead of spinning.
            select.select([], [fd], [])
        except OSError as e:
            return done, e
    return done, None


class StdoutSink(Sink):
    name: ClassVar[str] = "stdout"
    options: ClassVar[dict[str, Option]] = {}

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.fd = STDOUT_FD

    async def start(self) -> None:
        # Nothing to open; a closed fd 1 shows up at the first write as a failure.
        return None

    async def write(self, batch: Batch) -> None:
        if self.skip(batch):
            return
        written, err = await asyncio.to_thread(_write_all, self.fd, batch.data)
        if err is None:
            self.stats.delivered += batch.count
            return
        # Whole lines that made it out were delivered; the cut line and the rest were not.
        whole = batch.data.count(b"\n", 0, written)
        self.stats.delivered += whole
        self.stats.drop("write_failed", batch.count - whole)
        if err.errno == errno.EPIPE:
            self.fail(
                "stdout was closed by its reader (broken pipe); later events are counted as dropped"
            )
            self._silence_stdout()
        else:
            self.fail(
                f"cannot write to stdout: {err.strerror}; later events are counted as dropped"
            )

    async def close(self) -> None:
        # Every write is complete when it returns: nothing is pending here.
        return None

    def _silence_stdout(self) -> None:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
        except OSError:
            return
        try:
            os.dup2(devnull, self.fd)
        except OSError:
            pass
        finally:
            os.close(devnull)
