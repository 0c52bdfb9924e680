"""The BPF side as the pipeline sees it: privileges, mounts, loading, the
trigger choice and kernel filters (pins: pipeline.pins). Everything kernel-facing goes
through pipeline._core; this module turns its errors into one-line ones."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import KernelError, PrivilegeError
from .pins import RunDir

if TYPE_CHECKING:
    from .ds import Arena

# Capability bits (linux/capability.h).
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39


def effective_caps() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def check_privileges(trigger: str | None = None, pin_dir: str | None = None) -> None:
    """Refuse early, with the real cause, what the kernel would refuse later.

    Root passes. CAP_BPF with CAP_PERFMON loads and runs the programs, but
    tracefs (where the syscall tracepoints' ids are read) is root's alone
    unless its mount grants more, and the pin directory must be writable:
    both are checked here for such a caller, so the message names them
    rather than whatever the kernel's refusal suggests later."""
    caps = effective_caps()
    if caps & (1 << CAP_SYS_ADMIN):
        return
    if not (caps & (1 << CAP_BPF) and caps & (1 << CAP_PERFMON)):
        raise PrivilegeError("loading BPF programs needs root (or CAP_BPF and CAP_PERFMON): "
                             "run it with sudo")
    if trigger == "tracepoint":
        tracefs = Path("/sys/kernel/tracing")
        ids = tracefs / "events/syscalls/sys_enter_openat/id"
        try:
            ids.read_bytes()
        except PermissionError:
            raise PrivilegeError(
                f"the syscall tracepoints need read access to tracefs ({ids}: permission "
                "denied; CAP_BPF and CAP_PERFMON do not grant it): run as root, mount "
                f"tracefs at {tracefs} with gid=GROUP,mode=0750 for a group of this user, or "
                "use --trigger none") from None
        except OSError:
            pass  # not mounted, or no such event: ensure_mounts and the attach say so
    if pin_dir is not None:
        # the nearest directory that exists must let this user create the rest
        d = Path(pin_dir)
        while not os.path.lexists(d) and d != d.parent:
            d = d.parent
        effective = os.access in os.supports_effective_ids
        if not os.access(d, os.W_OK | os.X_OK, effective_ids=effective):
            raise PrivilegeError(
                f"the pin directory {pin_dir} cannot be created or written by uid "
                f"{os.geteuid()} ({d} is not writable): give --pin-dir a directory on bpffs "
                "this user owns, e.g. /sys/fs/bpf/$USER")


def _mounted(path: str) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == path for line in f)


def ensure_mounts() -> None:
    """bpffs for pins, tracefs for tracepoint ids; idempotent."""
    for fstype, path in (("bpf", "/sys/fs/bpf"), ("tracefs", "/sys/kernel/tracing")):
        if _mounted(path):
            continue
        mount = shutil.which("mount") or "/bin/mount"
        res = subprocess.run([mount, "-t", fstype, fstype, path], capture_output=True, text=True)
        if res.returncode != 0 and not _mounted(path):
            msg = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed"
            raise KernelError(f"cannot mount {fstype} at {path} ({msg}); mount it by hand: "
                              f"mount -t {fstype} {fstype} {path}")


def check_kernel() -> None:
    if not Path("/sys/kernel/btf/vmlinux").exists():
        raise KernelError("this kernel has no BTF (/sys/kernel/btf/vmlinux): "
                          "a kernel built with CONFIG_DEBUG_INFO_BTF=y is needed")


@dataclass
class Attached:
    trigger: str  # "lsm", "tracepoint" or "none"
    reason: str


class Kernel:
    """A loaded session: arena, queue, producers."""

    def __init__(self, arena_pages: int, queue_capacity: int, verbose: bool = False) -> None:
        from . import _core

        self._core = _core
        _core.set_verbose(verbose)
        try:
            self.session = _core.Session(arena_pages=arena_pages, queue_capacity=queue_capacity)
        except _core.CoreError as e:
            raise KernelError(str(e.args[1] if len(e.args) > 1 else e)) from None
        self.pin_path: str | None = None
        self._arena: Arena | None = None

    def attach(self, trigger: str) -> Attached:
        core = self._core
        if trigger == "none":
            return Attached("none", "no file-creation producer was asked for (--trigger none)")
        if trigger == "getppid":
            try:
                self.session.attach("getppid")
            except core.CoreError as e:
                raise KernelError(str(e.args[1])) from None
            return Attached("getppid", "benchmark load: one event per getppid() of --filter-pid")
        lsm_error = ""
        if trigger in ("auto", "lsm"):
            try:
                self.session.attach("lsm")
                return Attached("lsm", "lsm.s/inode_create attached")
            except core.CoreError as e:
                lsm_error = str(e.args[1])
                if trigger == "lsm":
                    raise KernelError(f"--trigger lsm: {lsm_error}; use --trigger tracepoint "
                                      "(or auto) on this kernel") from None
        try:
            self.session.attach("tracepoint")
        except core.CoreError as e:
            raise KernelError(str(e.args[1])) from None
        if trigger == "auto":
            return Attached("tracepoint", f"fallback: {lsm_error}")
        return Attached("tracepoint", "asked for with --trigger tracepoint")

    def pin(self, run: RunDir) -> str:
        """Pin the arena and the burst program in this run's directory, through
        its descriptor (pipeline.pins made and checked it)."""
        try:
            self.session.pin(run.fd_path)
        except self._core.CoreError as e:
            raise KernelError(f"cannot pin BPF objects under {run.path}: "
                              f"{os.strerror(e.errno or 0)}") from None
        self.pin_path = run.path
        return run.path

    def arena(self) -> Arena:
        """The data-structure space beside the event queue, in this process (one per
        session: the sinks, the pool's parent and the run share it)."""
        if self._arena is None:
            from .ds import Arena

            try:
                self._arena = Arena.of_session(self.session)
            except self._core.CoreError as e:
                raise KernelError(str(e.args[1] if len(e.args) > 1 else e)) from None
        return self._arena

    def close(self) -> None:
        if self._arena is not None:
            self._arena.close()
            self._arena = None
        with contextlib.suppress(Exception):
            self.session.close()
