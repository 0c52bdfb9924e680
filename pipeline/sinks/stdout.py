"""stdout sink: JSON lines on file descriptor 1.

Each batch goes out with os.write, looping over partial writes, from a worker thread so that a
slow terminal or pipe stalls this sink and not the event loop. Bytes handed to os.write are
"delivered": for a pipe they sit in the pipe until the reader takes them.

A broken pipe (`... | head`) or any other write error fails the sink for good: one line on
stderr, the lines not written counted as dropped "write_failed", and fd 1 is pointed at
/dev/null so that the interpreter's own flush of sys.stdout at exit cannot print a traceback.

A write is not the only way to learn that the reader has gone: an idle pipeline writes
nothing. fd 1 is watched through an epoll set of its own, registered for no events, so it
reports only EPOLLERR (a pipe whose read end is closed) and EPOLLHUP (a hung-up terminal or
socket); the event loop watches that epoll fd like any other. A regular file or /dev/null
cannot be polled, and cannot go away either: those are not watched.
"""

from __future__ import annotations

import asyncio
import errno
import os
import select
from typing import Any, ClassVar

from pipeline.sinks.base import Batch, Option, Sink
from pipeline.stdio import to_devnull

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
        self._watch: select.epoll | None = None
        self._writing = False
        self._hangup: str | None = None  # seen by the watch while a write was in flight

    async def start(self) -> None:
        # Nothing to open; the CLI has checked that fd 1 is open for writing.
        self._start_watch()

    async def write(self, batch: Batch) -> None:
        if self.skip(batch):
            return
        self._writing = True
        try:
            written, err = await asyncio.to_thread(_write_all, self.fd, batch.data)
        finally:
            self._writing = False
        if err is None:
            self.stats.delivered += batch.count
            if self._hangup is not None:
                self._reader_gone(self._hangup)
            return
        # Whole lines that made it out were delivered; the cut line and the rest were not.
        whole = batch.data.count(b"\n", 0, written)
        self.stats.delivered += whole
        self.stats.drop("write_failed", batch.count - whole)
        self._stop_watch()
        if err.errno in (errno.EPIPE, errno.ECONNRESET):
            self._reader_gone("broken pipe")
        else:
            self.fail(
                f"cannot write to stdout: {err.strerror}; later events are counted as dropped"
            )

    async def close(self) -> None:
        # Every write is complete when it returns: nothing is pending here.
        self._stop_watch()

    def _start_watch(self) -> None:
        try:
            ep = select.epoll()
        except OSError:
            return
        try:
            ep.register(self.fd, 0)  # EPOLLERR and EPOLLHUP are reported whatever the mask
        except OSError:  # EPERM: a regular file or a device that cannot be polled
            ep.close()
            return
        self._watch = ep
        asyncio.get_running_loop().add_reader(ep.fileno(), self._on_watch)

    def _stop_watch(self) -> None:
        ep, self._watch = self._watch, None
        if ep is not None:
            asyncio.get_running_loop().remove_reader(ep.fileno())
            ep.close()

    def _on_watch(self) -> None:
        ep = self._watch
        if ep is None:
            return
        events = ep.poll(0)
        if not events:
            return
        mask = events[0][1]
        self._stop_watch()
        why = "broken pipe" if mask & select.EPOLLERR else "hung up"
        if self._writing:
            # The write in flight accounts for its batch first (it may meet EPIPE itself):
            # pointing fd 1 elsewhere now would let the rest of it count as delivered.
            self._hangup = why
            return
        self._reader_gone(why)

    def _reader_gone(self, why: str) -> None:
        self.fail(f"stdout was closed by its reader ({why}); later events are counted as dropped",
                  reader_gone=True)
        to_devnull(self.fd)
