"""cgroup v2 directories for the tests: the mount this machine has, a per-test parent
made under it and removed afterwards, children included."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.cgroups import find_mount

MOUNT = find_mount()
# CI's fresh root (a chroot) mounts this machine's /sys, cgroup2 included, so this skips
# only where no cgroup2 is mounted at all.
needs_cgroup2 = pytest.mark.skipif(MOUNT is None, reason="no cgroup2 file system is mounted")


def rmdir_tree(d: Path) -> None:
    """Remove a cgroup directory and its children (cgroup directories go with rmdir only)."""
    if not d.is_dir():
        return
    for child in d.iterdir():
        if child.is_dir() and not child.is_symlink():
            rmdir_tree(child)
    d.rmdir()


@pytest.fixture
def cg_base() -> Iterator[Path]:
    """A fresh cgroup under the mount's top, for this test only."""
    assert MOUNT is not None
    base = Path(os.fsdecode(MOUNT.point)) / f"ap-test-{os.getpid()}-{secrets.token_hex(4)}"
    base.mkdir()
    try:
        yield base
    finally:
        rmdir_tree(base)
