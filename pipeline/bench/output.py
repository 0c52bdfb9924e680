"""The output directory, written as root without being redirected: the directory is reached
with pipeline.safefs (no link another user planted is followed, no directory others can
change is accepted), the directories missing under it are created one at a time relative to
their parent's descriptor, and every file is written under a fresh name (O_EXCL, O_NOFOLLOW)
and renamed over its final name, which may hold only an earlier run's file of ours."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path

from .. import safefs
from ..errors import ConfigError

_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def default_path(base: str = "results") -> str:
    """results/<date>-<host>, with -2, -3, ... when an earlier run took the name."""
    stem = f"{base}/{time.strftime('%Y-%m-%d')}-{socket.gethostname()}"
    path, n = stem, 1
    while os.path.lexists(path):
        n += 1
        path = f"{stem}-{n}"
    return path


class Output:
    def __init__(self, path: str) -> None:
        self.shown = path
        self.fd = self._open(os.path.abspath(path))

    def _open(self, full: str) -> int:
        missing: list[str] = []
        cur = full
        while not os.path.lexists(cur):
            missing.append(os.path.basename(cur))
            cur = os.path.dirname(cur)
        try:
            fd = safefs.open_dir(cur)
        except safefs.Refused as e:
            raise ConfigError(f"bench: --output {self.shown}: {e}; choose another "
                              "directory") from None
        except OSError as e:
            raise ConfigError(f"bench: --output {self.shown}: cannot open {cur} "
                              f"({e.strerror}); give a directory") from None
        try:
            for name in reversed(missing):
                # made meanwhile: opened and checked like any other below
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o755, dir_fd=fd)
                nfd = os.open(name, _DIR, dir_fd=fd)
                os.close(fd)
                fd = nfd
                safefs.check_dir(fd, self.shown)
        except safefs.Refused as e:
            os.close(fd)
            raise ConfigError(f"bench: --output {self.shown}: {e}; choose another "
                              "directory") from None
        except OSError as e:
            os.close(fd)
            raise ConfigError(f"bench: --output {self.shown}: cannot create it "
                              f"({e.strerror}); give a directory root can write") from None
        return fd

    def write(self, name: str, data: bytes) -> Path:
        tmp = f".{name}.{os.getpid()}.tmp"
        fd = os.open(tmp, _NEW, 0o644, dir_fd=self.fd)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            self.check(name)
            safefs.rename_own(self.fd, tmp, name)
        except BaseException:
            os.unlink(tmp, dir_fd=self.fd)
            raise
        return Path(self.shown) / name

    def check(self, name: str) -> None:
        """ConfigError unless `name` is free or holds an earlier run's file of ours."""
        try:
            safefs.own_entry(self.fd, name)
        except safefs.Refused as e:
            raise ConfigError(f"bench: --output {self.shown}: {e}, or choose another "
                              "directory") from None

    def close(self) -> None:
        os.close(self.fd)
