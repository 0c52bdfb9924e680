"""Files created by a process of a given name: the pipeline's runs filter on that name
(`--filter-comm`), so each test sees its own files only."""

from __future__ import annotations

import itertools
import os
import subprocess
from pathlib import Path

# creates argv[4] files in argv[2] named argv[3]-NNNNNN, as a process named argv[1]
CREATOR = r"""
import ctypes, os, sys
ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)  # PR_SET_NAME: the run's filter
d = os.open(sys.argv[2], os.O_RDONLY | os.O_DIRECTORY)
for i in range(int(sys.argv[4])):
    os.close(os.open(f"{sys.argv[3]}-{i:06d}", os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=d))
"""
_comms = itertools.count()


def new_comm(prefix: str) -> str:
    """A process name no other test of this session uses (prefix: 3 letters per file)."""
    return f"{prefix}{os.getpid() % 100000}x{next(_comms)}"


def create(comm: str, work: Path, tag: str, n: int) -> None:
    subprocess.run(["/usr/bin/python3", "-c", CREATOR, comm, str(work), tag, str(n)], check=True)
