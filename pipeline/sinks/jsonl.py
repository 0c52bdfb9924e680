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
- Run as root, it writes, chmods, renames and removes nothing but its own files (safefs.py):
  its directory is reached without following a link another user could plant and is opened
  once; the file is opened relative to it without following a link, and must be a regular
  file the running user owns, with one link, before its mode is set. At start anything else
  is a SinkError (one line, exit 2); at a later reopen or rotation it fails the sink for
  good like any other write failure, and the other sinks go on.

The path is followed, not the open file: when the file was removed or replaced (logrotate, an
operator), the sink opens the name afresh, in the directory it opened at start, before its
next batch instead of writing into an unlinked inode nobody can read. An inotify watch on the
open file (pathwatch.py) says when that may have happened; only then does the sink look the
name up, so a batch costs one non-blocking read instead of a stat through a worker thread.
Without inotify it looks before every batch.
Bytes are handed to the kernel per batch (no fsync): a process crash loses nothing written,
a power loss may.
The sink assumes it is the only writer of the file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import os
from collections.abc import Mapping
from typing import Any, ClassVar

import aiofiles
from aiofiles.threadpool.binary import AsyncFileIO

from pipeline import log, safefs
from pipeline.ranges import SINK_JSONL
from pipeline.sinks.base import Batch, Option, Sink, SinkError
from pipeline.sinks.pathwatch import PathWatch
from pipeline.sinks.stdout import StdoutSink

# Where the sink appends when no output is given: a directory of its own under /var/log,
# made by the first run (root's, mode 0750) so that the checks on every directory of the
# path pass without anyone preparing it.
DEFAULT_OUTPUT = "/var/log/arena-pipeline/events.jsonl"
DEFAULT_DIR_MODE = 0o750
# output = "-": the lines go to standard output, through the stdout sink's writer.
TO_STDOUT = "-"


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


def _names_a_file(value: Any) -> str | None:
    if not value:
        return "must not be empty"
    if "\0" in value:
        return "must not contain a NUL character"
    if os.path.basename(value) in ("", ".", ".."):
        return "must name a file, not a directory"
    return None


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
            str, DEFAULT_OUTPUT, 'path of the JSON-lines file, appended to; "-": standard '
            "output", check=_names_a_file
        ),
        "rotate_bytes": Option(
            int, 0, "rotate before a batch would take the file past this size; 0 = never",
            check=SINK_JSONL["rotate_bytes"],
        ),
        "rotate_keep": Option(
            int, 5, "rotated files kept as PATH.1 (newest) .. PATH.N; 0 = delete on rotation",
            check=SINK_JSONL["rotate_keep"],
        ),
        "mode": Option(int, 0o600, "permission bits of the file, in octal", coerce=parse_mode),
        "allow_shared_dir": Option(
            bool, False, "accept a directory other users can change (they can then delete "
            "or rename the files)"),
    }

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> dict[str, str]:
        group.add_argument("--output", metavar="PATH",
                           help=f"jsonl sink: file to append to (default {DEFAULT_OUTPUT}; "
                                "-: standard output)")
        group.add_argument("--rotate-bytes", type=SINK_JSONL["rotate_bytes"].flag(),
                           metavar="N", help="jsonl sink: rotate the file when it would pass "
                                             "N bytes (0: never); "
                                             f"{SINK_JSONL['rotate_bytes'].describe()}")
        return {"output": "output", "rotate_bytes": "rotate_bytes"}

    @classmethod
    def validate_options(cls, raw: Mapping[str, Any]) -> dict[str, Any]:
        out = super().validate_options(raw)
        if out["output"] == TO_STDOUT and out["rotate_bytes"]:
            raise SinkError("sink jsonl: standard output (output \"-\") cannot be rotated; "
                            "drop rotate_bytes or name a file as output")
        return out

    @classmethod
    def create(cls, **options: Any) -> Sink:
        if options.get("output") == TO_STDOUT:
            return JsonlToStdout(**options)
        return cls(**options)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.path: str = self.config["output"]
        if self.path == TO_STDOUT:
            raise SinkError('sink jsonl: output "-" is standard output: build the sink '
                            "with JsonlSink.create")
        self._dirname, self._name = os.path.split(self.path)
        self._dirname = self._dirname or "."
        self._dir = -1  # the file's directory, opened once; every name is relative to it
        self._file: AsyncFileIO | None = None
        self._inode: tuple[int, int] = (0, 0)
        self._size = 0
        self._watch = PathWatch()
        # Stat the path before the next batch whatever the watch says: set after each open,
        # so a replacement between the open and the watch's arming is caught too.
        self._recheck = True

    async def start(self) -> None:
        try:
            if self.path == DEFAULT_OUTPUT:
                await asyncio.to_thread(_make_default_dir)
            self._dir = await asyncio.to_thread(
                safefs.open_dir, self._dirname, self.config["allow_shared_dir"])
            await self._open()
        except (safefs.Refused, OSError) as e:
            self._close_dir()
            if isinstance(e, safefs.Refused):
                raise SinkError(f"refusing output {self.path}: {self._explain(e)}") from None
            hint = _OPEN_HINTS.get(e.errno or 0, "fix output")
            raise SinkError(f"cannot open {self.path} for writing: {e.strerror}; {hint}") from None
        if self.path == DEFAULT_OUTPUT:
            log.get(__name__).info("sink jsonl: appending to %s (the default; --output PATH "
                                   "or --output - for standard output)", self.path)

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
        except safefs.Refused as e:
            self.stats.drop("write_failed", batch.count)
            await self._give_up(
                f"refusing to reopen or rotate {self.path}: {self._explain(e)}; "
                "later events are counted as dropped"
            )
            return
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
        self._close_dir()

    def _close_dir(self) -> None:
        if self._dir >= 0:
            os.close(self._dir)
            self._dir = -1

    @staticmethod
    def _explain(e: safefs.Refused) -> str:
        if isinstance(e, safefs.SharedDir):
            return (f"{e}; choose a directory only root can change, or set "
                    "allow_shared_dir = true in [sink.jsonl]")
        return str(e)

    async def _open(self) -> None:
        mode = self.config["mode"]

        def open_checked() -> tuple[int, os.stat_result]:
            safefs.check_dir(self._dir, self._dirname, self.config["allow_shared_dir"])
            return safefs.open_append(self._dir, self._name, mode)

        fd, st = await asyncio.to_thread(open_checked)
        try:
            f = await aiofiles.open(fd, "ab", buffering=0)
        except BaseException:
            os.close(fd)
            raise
        self._file = f
        self._inode = (st.st_dev, st.st_ino)
        self._size = st.st_size
        self._watch.watch(fd)
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
            st = await asyncio.to_thread(
                os.stat, self._name, dir_fd=self._dir, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None and (st.st_dev, st.st_ino) == self._inode:
            self._size = st.st_size
            return
        await self._close_file()
        await self._open()

    async def _rotate(self) -> None:
        await self._close_file()
        await asyncio.to_thread(self._rotate_names)
        await self._open()

    def _rotate_names(self) -> None:
        dfd, name, keep = self._dir, self._name, self.config["rotate_keep"]
        safefs.check_dir(dfd, self._dirname, self.config["allow_shared_dir"])
        if keep == 0:
            safefs.unlink_own(dfd, name)
            return
        olds = [f"{name}.{i}" for i in range(1, keep + 1)]
        # Every name is checked before any is moved: a refusal leaves the files as they were.
        present = [safefs.own_entry(dfd, n) for n in (name, *olds)]
        if not present[0]:
            return  # removed since the last batch: the reopen starts a fresh file
        # Oldest first, so nothing is overwritten before it moved; rename replaces PATH.keep.
        for i in range(keep - 1, 0, -1):
            if present[i]:
                safefs.rename_own(dfd, olds[i - 1], olds[i])
        safefs.rename_own(dfd, name, olds[0])

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


def _make_default_dir() -> None:
    """Create DEFAULT_OUTPUT's directory when it is missing: inside its parent, reached as
    safefs reaches every output directory, as a directory of the running user, mode 0750
    whatever the umask. An existing one is left as it is, for open_dir to check."""
    parent, name = os.path.split(os.path.dirname(DEFAULT_OUTPUT))
    pfd = safefs.open_dir(parent)
    try:
        try:
            os.mkdir(name, DEFAULT_DIR_MODE, dir_fd=pfd)
        except FileExistsError:
            return
        # mkdir's mode passed through the umask; the directory is still empty and ours
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=pfd)
        try:
            os.fchmod(fd, DEFAULT_DIR_MODE)
        finally:
            os.close(fd)
    finally:
        os.close(pfd)


class JsonlToStdout(StdoutSink):
    """The jsonl sink with output "-": the stdout sink's writer under the jsonl name and
    options (rotation is refused for it by JsonlSink.validate_options)."""

    name: ClassVar[str] = "jsonl"
    options: ClassVar[dict[str, Option]] = JsonlSink.options
