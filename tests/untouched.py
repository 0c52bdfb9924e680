"""What a run may change: its own files, and nothing else. A Sandbox gives a run an empty
working directory and TMPDIR and a pin directory of its own, and snapshots the directories a
test names (type, mode, owner, size, mtime and, for files, content hash of every entry, links
not followed) so that check() can assert that nothing outside the run's own files changed."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

Entry = tuple[int, int, int, int, int, str]


def tree(root: Path, own: frozenset[Path]) -> dict[str, Entry]:
    out: dict[str, Entry] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [n for n in dirnames if Path(dirpath, n) not in own]  # own: not entered
        for name in [*dirnames, *filenames]:
            p = Path(dirpath, name)
            if p in own:
                continue
            st = p.lstat()
            digest = ""
            if stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
            size, mtime = (0, 0) if stat.S_ISDIR(st.st_mode) else (st.st_size, st.st_mtime_ns)
            out[str(p.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, size, mtime,
                                             digest)
    return out


class Sandbox:
    def __init__(self, base: Path, pin_root: Path, *watched: Path) -> None:
        self.cwd = base / "cwd"
        self.tmp = base / "tmpdir"
        for d in (self.cwd, self.tmp):
            d.mkdir(mode=0o700)
        self.pin_root = pin_root
        self.watched = [base, *watched]
        self.own: set[Path] = set()
        self.before: dict[Path, dict[str, Entry]] = {}

    def allow(self, *paths: Path) -> None:
        """The run's own files (outputs, listener sockets and counts): they may change."""
        self.own.update(paths)

    def snapshot(self) -> None:
        own = frozenset(self.own)
        self.before = {d: tree(d, own) for d in self.watched}

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(self.tmp)}

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "pipeline", *args]

    def run(self, *args: str, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), cwd=self.cwd, env=self.env(), text=True,
                              capture_output=True, timeout=timeout, **kw)

    def check(self) -> None:
        own = frozenset(self.own)
        for d, before in self.before.items():
            after = tree(d, own)
            changed = sorted(k for k in before.keys() | after.keys()
                             if before.get(k) != after.get(k))
            assert not changed, f"changed under {d}: {changed}"
        assert not any(self.cwd.iterdir()), list(self.cwd.iterdir())
        assert not any(self.tmp.iterdir()), list(self.tmp.iterdir())
        assert not self.pin_root.exists() or not any(self.pin_root.iterdir()), (
            list(self.pin_root.iterdir()))
