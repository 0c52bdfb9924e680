"""Tell cheaply whether a file that is open for writing may have left its path.

The jsonl sink follows its path: when the file is removed or renamed it must reopen the path
rather than write into an inode nobody can reach. Asking the filesystem before every batch
costs a stat, and from asyncio a thread hand-off, which at millions of events a second is a
large share of the sink's time. An inotify watch on the open file reports the events that can
detach it from its path (its link count changing on unlink or replacement, IN_ATTRIB; a rename,
IN_MOVE_SELF), and asking the watch is one non-blocking read in the event loop's thread.

A change reported here is a hint, not a verdict (a chmod reports IN_ATTRIB too): the caller
then stats the path and decides. Where inotify is unavailable (no libc symbol, no watches left)
`changed()` always answers True, which is the stat-every-batch behaviour.
"""

from __future__ import annotations

import ctypes
import functools
import os

IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
IN_ATTRIB = 0x004
IN_MOVE_SELF = 0x800
IN_DELETE_SELF = 0x400
_MASK = IN_ATTRIB | IN_MOVE_SELF | IN_DELETE_SELF


@functools.cache
def _libc() -> ctypes.CDLL | None:
    # The interpreter's own symbols, libc's among them: no library search (find_library
    # would run ldconfig in a subprocess) on the sink's start-up path, and only once.
    try:
        lib = ctypes.CDLL(None)
        lib.inotify_init1.argtypes = [ctypes.c_int]
        lib.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        lib.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError):
        return None
    return lib


class PathWatch:
    """An inotify watch on one open file; re-armed with `watch()` after each (re)open."""

    def __init__(self) -> None:
        self._lib = _libc()
        self._fd = -1
        self._wd = -1
        if self._lib is not None:
            self._fd = self._lib.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)

    @property
    def active(self) -> bool:
        return self._fd >= 0 and self._wd >= 0

    def watch(self, fd: int) -> None:
        """Watch the file open as `fd` (call right after opening it), dropping the old
        watch. Events still queued for the old file only cause one extra check."""
        if self._lib is None or self._fd < 0:
            return
        if self._wd >= 0:
            self._lib.inotify_rm_watch(self._fd, self._wd)
        # Through the descriptor's /proc link, so the watch is on the inode that was opened
        # and checked, whatever its path holds by now. Without /proc the watch fails and
        # changed() answers True.
        self._wd = self._lib.inotify_add_watch(self._fd, f"/proc/self/fd/{fd}".encode(), _MASK)

    def changed(self) -> bool:
        """True when the file may have been removed, replaced or renamed since the last
        call (always True without a working watch)."""
        if not self.active:
            return True
        seen = False
        while True:
            try:
                if not os.read(self._fd, 4096):
                    return seen
            except BlockingIOError:
                return seen
            except OSError:
                return True
            seen = True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = self._wd = -1
