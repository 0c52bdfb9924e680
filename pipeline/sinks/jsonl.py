"""jsonl sink: JSON lines appended to a file, with optional size-based rotation.

Guarantees:
- The file only ever holds whole lines from this sink: each batch is one write (looping over
  short writes), and a write that fails midway (ENOSPC, EIO) is cut back with ftruncate to
  the size the file had before the batch. The batch counts as dropped "write_failed", the
  failure is reported once, and the sink has failed for good: later batches are dropped too,
  because writing after a hole in the stream would hide the loss.
- A batch is never split across files: rotation happens before a batch that would take the
  file past rotate_bytes (a batch larger than rotate_bytes goes alone into a fresh file).
- The file's permission bits are set to `mode` whether it was created or already there, so
  events are not readable by other users unless the configuration says so.

The path is followed, not the open file: when the file was removed or replaced (logrotate, an
operator), the sink opens the path afresh before its next batch instead of writing into an
unlinked inode nobody can read. An inotify watch on the open file (pathwatch.py) says when that
may have happened; only then does the sink stat the path, so a batch costs one non-blocking
read instead of a stat through a worker thread. Without inotify it stats before every batch.
Bytes are handed to the kernel per batch (no fsync): a process crash loses nothing written,
a power loss may.
The sink assumes it is the only writer of the file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from typing import Any, ClassVar

import aiofiles
import aiofiles.os
from aiofiles.threadpool.binary import AsyncFileIO

from pipeline.sinks.base import REQUIRED, Batch, Option, Sink, SinkError, at_least
from pipeline.sinks.pathwatch import PathWatch


def parse_mode(raw: Any) -> int:
    """File permission bits: an int (TOML 0o640) or an octal string ("640", "0640", "0o640")."""
    if isinstance(raw, bool):
        raise ValueError("must be octal permission bits such as 0o600")
    if isinstance(raw, int):
        value = raw
    elif isinstance(raw, str):
        try:
            value = int(raw.strip().lower().removeprefix("0o"), 8)
        except ValueError:
            raise ValueError('must be octal permission bits such as "600" or "0o640"') from None
    else:
        raise ValueError("must be octal permission bits such as 0o600")
    if not 0 <= value <= 0o777:
        # Catches `mode = 600` in TOML, which is decimal 600, not rw-------.
        raise ValueError('must be permission bits <= 0o777 (write it in octal: 0o600 or "600")')
    return value


def _nonempty(value: Any) -> str | None:
    return None if value else "must not be empty"


_OPEN_HINTS = {
    errno.ENOENT: "create its directory or fix output",
    errno.EACCES: "fix the permissions or choose another output path",
    errno.EPERM: "fix the permissions or choose another output path",
    errno.EISDIR: "output must name a file, not a directory",
    errno.EROFS: "choose a path on a writable filesystem",
    errno.ENOSPC: "free some space or choose another filesystem",
    errno.ENXIO: "use the stdout sink for pipes and devices",  # a FIFO without a reader
    errno.EINVAL: "use the stdout sink for pipes and devices",
}


class JsonlSink(Sink):
    name: ClassVar[str] = "jsonl"
    options: ClassVar[dict[str, Option]] = {
        "output": Option(
            str, REQUIRED, "path of the JSON-lines file, appended to", check=_nonempty
        ),
        "rotate_bytes": Option(
            int, 0, "rotate before a batch would take the file past this size; 0 = never",
            check=at_least(0),
        ),
        "rotate_keep": Option(
            int, 5, "rotated files kept as PATH.1 (newest) .. PATH.N; 0 = delete on rotation",
            check=at_least(0),
        ),
        "mode": Option(int, 0o600, "permission bits of the file, in octal", coerce=parse_mode),
    }

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.path: str = self.config["output"]
        self._file: AsyncFileIO | None = None
        self._inode: tuple[int, int] = (0, 0)
        self._size = 0
        self._watch = PathWatch()
        # Stat the path before the next batch whatever the watch says: set after each open,
        # so a replacement between the open and the watch's arming is caught too.
        self._recheck = True

    async def start(self) -> None:
        try:
            await self._open()
        except OSError as e:
            hint = _OPEN_HINTS.get(e.errno or 0, "fix output")
            raise SinkError(f"cannot open {self.path} for writing: {e.strerror}; {hint}") from None

    async def write(self, batch: Batch) -> None:
        if self.skip(batch):
            return
        if self._file is None:
            self.stats.drop("write_failed", batch.count)
            return
        try:
            if self._recheck or self._watch.changed():
                self._recheck = False
                await self._follow_path()
            limit = self.config["rotate_bytes"]
            if limit and self._size > 0 and self._size + len(batch.data) > limit:
                await self._rotate()
        except OSError as e:
            self.stats.drop("write_failed", batch.count)
            await self._give_up(
                f"cannot reopen or rotate {self.path}: {e.strerror}; "
                "later events are counted as dropped"
            )
            return
        before = self._size
        written, err = await self._write_all(batch.data)
        if err is None:
            self._size += written
            self.stats.delivered += batch.count
            return
        await self._roll_back(batch, before, written, err)

    async def close(self) -> None:
        # Each batch is in the kernel when write() returns: closing flushes nothing further.
        await self._close_file()
        self._watch.close()

    async def _open(self) -> None:
        mode = self.config["mode"]

        def opener(path: str, flags: int) -> int:
            # O_NONBLOCK: opening a FIFO with no reader fails instead of hanging the sink
            # (it changes nothing for a regular file).
            return os.open(path, flags | os.O_NONBLOCK, mode)

        f = await aiofiles.open(self.path, "ab", buffering=0, opener=opener)
        try:
            st = await aiofiles.os.stat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                # Rotation, truncation and chmod make no sense on a pipe or a device node.
                raise OSError(errno.EINVAL, "not a regular file")
            # The create mode is filtered by the umask and ignored for an existing file.
            if stat.S_IMODE(st.st_mode) != mode:
                os.fchmod(f.fileno(), mode)
        except OSError:
            await f.close()
            raise
        self._file = f
        self._inode = (st.st_dev, st.st_ino)
        self._size = st.st_size
        self._watch.watch(self.path)
        self._recheck = True

    async def _close_file(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            # Nothing is buffered in user space (buffering=0): a failing close loses nothing.
            with contextlib.suppress(OSError):
                await f.close()

    async def _follow_path(self) -> None:
        """Reopen the path if the open file was removed or replaced; refresh the size."""
        try:
            st = await aiofiles.os.stat(self.path)
        except FileNotFoundError:
            st = None
        if st is not None and (st.st_dev, st.st_ino) == self._inode:
            self._size = st.st_size
            return
        await self._close_file()
        await self._open()

    async def _rotate(self) -> None:
        await self._close_file()
        keep = self.config["rotate_keep"]
        if keep == 0:
            await aiofiles.os.unlink(self.path)
        else:
            # Oldest first, so nothing is overwritten before it moved; rename replaces PATH.keep.
            for i in range(keep - 1, 0, -1):
                with contextlib.suppress(FileNotFoundError):
                    await aiofiles.os.rename(f"{self.path}.{i}", f"{self.path}.{i + 1}")
            await aiofiles.os.rename(self.path, f"{self.path}.1")
        await self._open()

    async def _write_all(self, data: bytes) -> tuple[int, OSError | None]:
        assert self._file is not None
        view = memoryview(data)
        done = 0
        while done < len(view):
            try:
                n = await self._file.write(view[done:])
            except InterruptedError:
                continue
            except OSError as e:
                return done, e
            done += n
        return done, None

    async def _roll_back(self, batch: Batch, before: int, written: int, err: OSError) -> None:
        assert self._file is not None
        lost = batch.count
        outcome = "rolled back"
        if written:
            try:
                await self._file.truncate(before)
            except OSError as e:
                # The whole lines that stayed in the file were received: count them as such.
                kept = batch.data.count(b"\n", 0, written)
                self.stats.delivered += kept
                lost -= kept
                outcome = f"not rolled back ({e.strerror}), a partial line may end the file"
        self.stats.drop("write_failed", lost)
        await self._give_up(
            f"write to {self.path} failed: {err.strerror}; the batch was {outcome}; "
            "later events are counted as dropped"
        )

    async def _give_up(self, msg: str) -> None:
        self.fail(msg)
        await self._close_file()
