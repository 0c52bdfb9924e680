"""The kernel's own accounting of BPF programs: run_time_ns and run_cnt per program.

The kernel counts only while statistics are enabled. Rather than flipping the
kernel.bpf_stats_enabled sysctl (global, and left on if the bench dies), the bench asks for
them with BPF_ENABLE_STATS: the kernel counts while that descriptor is open and stops by
itself when the last one closes, however the process ends, so nothing needs restoring and a
sysctl someone else set stays as it was.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import subprocess
from dataclasses import dataclass

from .tools import bpftool

_SYS_BPF = {"x86_64": 321, "aarch64": 280}
_BPF_ENABLE_STATS = 32  # enum bpf_cmd
_BPF_STATS_RUN_TIME = 0


class StatsUnavailable(Exception):
    """The kernel would not count (str: why)."""


class Enabled:
    """BPF run-time statistics on for as long as this is open."""

    def __init__(self) -> None:
        nr = _SYS_BPF.get(platform.machine())
        if nr is None:
            raise StatsUnavailable(f"the bpf syscall number on {platform.machine()} is not "
                                   "known here")
        libc = ctypes.CDLL(None, use_errno=True)
        attr = (ctypes.c_uint32 * 2)(_BPF_STATS_RUN_TIME, 0)
        fd = libc.syscall(ctypes.c_long(nr), ctypes.c_int(_BPF_ENABLE_STATS), ctypes.byref(attr),
                          ctypes.c_uint(ctypes.sizeof(attr)))
        if fd < 0:
            err = ctypes.get_errno()
            raise StatsUnavailable(f"BPF_ENABLE_STATS failed: {os.strerror(err)}")
        self.fd: int | None = int(fd)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> Enabled:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class ProgStats:
    run_time_ns: int
    run_cnt: int
    progs: int


def _prog_ids(pid: int) -> set[int]:
    """Ids of the BPF programs process `pid` holds a descriptor of (its fdinfo names them)."""
    ids: set[int] = set()
    fdinfo = f"/proc/{pid}/fdinfo"
    try:
        fds = os.listdir(fdinfo)
    except FileNotFoundError:
        return ids
    for fd in fds:
        try:
            with open(f"{fdinfo}/{fd}") as f:
                for line in f:
                    if line.startswith("prog_id:"):
                        ids.add(int(line.split()[1]))
        except (FileNotFoundError, ValueError):
            continue  # closed meanwhile
    return ids


def of_pid(pid: int) -> dict[int, tuple[int, int]]:
    """run_time_ns and run_cnt of every BPF program process `pid` holds, by program id."""
    return of_ids(_prog_ids(pid))


def of_ids(ids: set[int]) -> dict[int, tuple[int, int]]:
    """run_time_ns and run_cnt of the BPF programs with these ids, by program id."""
    if not ids:
        return {}
    res = subprocess.run([bpftool(), "-j", "prog", "show"], capture_output=True, text=True,
                         check=False)
    if res.returncode != 0:
        raise StatsUnavailable("bpftool prog show failed: "
                               + (res.stderr.strip().splitlines() or ["no message"])[-1])
    return {int(p["id"]): (int(p.get("run_time_ns", 0)), int(p.get("run_cnt", 0)))
            for p in json.loads(res.stdout or "[]") if int(p["id"]) in ids}


def delta(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]) -> ProgStats:
    """What the programs present at both reads spent between them."""
    t = c = 0
    for pid, (rt, rc) in after.items():
        rt0, rc0 = before.get(pid, (0, 0))
        t += rt - rt0
        c += rc - rc0
    return ProgStats(t, c, len(after))
