"""What the benchmark needs besides the project itself: its C load programs, built here on
first use, and the programs its baselines run, located with the reason when missing.

A missing tool the bench cannot make itself stops it with one line naming the fix
(ToolError, exit 2); a missing baseline only leaves that baseline out, with its reason in
the report.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ..errors import PipelineError

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
HERE = Path(__file__).resolve().parent
# the load programs: build/NAME from pipeline/bench/NAME.c
PROGRAMS = ("loadgen", "createload", "forkload")
SHARED_HEADER = "loadcommon.h"  # included by both, beside them
CFLAGS = ("-O2", "-Wall", "-Wextra", "-Werror")


class ToolError(PipelineError):
    """Something the bench needs is missing and it cannot make it: one line with the fix."""


def program(name: str) -> Path:
    """build/NAME, compiled from pipeline/bench/NAME.c when missing or older than its source
    or the header the load programs share."""
    if name not in PROGRAMS:
        raise ValueError(f"unknown load program {name}")
    src, out = HERE / f"{name}.c", BUILD / name
    try:
        newest = max(src.stat().st_mtime, (HERE / SHARED_HEADER).stat().st_mtime)
        if out.stat().st_mtime >= newest and os.access(out, os.X_OK):
            return out
    except FileNotFoundError:
        pass
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise ToolError(f"bench: no C compiler to build {out}: run `make setup` as root "
                        "(it installs gcc), or build it with `make bench`")
    BUILD.mkdir(mode=0o755, exist_ok=True)
    # built under a name of its own, then renamed: a half-written binary never has the name
    tmp = BUILD / f".{name}.{os.getpid()}"
    res = subprocess.run([cc, *CFLAGS, "-o", str(tmp), str(src)], capture_output=True, text=True,
                         check=False)
    if res.returncode != 0:
        tmp.unlink(missing_ok=True)
        why = (res.stderr.strip().splitlines() or ["no message"])[0]
        raise ToolError(f"bench: cannot build {out} ({why}): run `make setup` as root, then "
                        "`make bench`")
    tmp.rename(out)
    return out


def bpftool() -> str:
    found = shutil.which("bpftool") or ("/usr/sbin/bpftool"
                                        if os.access("/usr/sbin/bpftool", os.X_OK) else None)
    if found is None:
        raise ToolError("bench: bpftool is missing: run `make setup` as root (it installs it)")
    return found


def bpftrace_missing() -> str | None:
    """None when bpftrace can run, else why not (the overhead part then leaves it out)."""
    if shutil.which("bpftrace") is None:
        return ("bpftrace is not installed: run `make setup` as root (installs Debian's "
                "bpftrace package)")
    return None


def bcc_missing() -> str | None:
    """None when the BCC baseline can run, else why not."""
    if not os.access("/usr/bin/python3", os.X_OK):
        return "Debian's /usr/bin/python3 is missing (BCC runs on it)"
    res = subprocess.run(["/usr/bin/python3", "-c", "import bcc"], capture_output=True,
                         check=False)
    if res.returncode != 0:
        return "BCC is not installed: run scripts/setup-bcc.sh as root (make bench does)"
    return None


def bpf_lsm_missing() -> str | None:
    """None when BPF LSM is active, else why not: the pipeline then captures through the
    syscall tracepoints, which is what the overhead part measures."""
    try:
        active = Path("/sys/kernel/security/lsm").read_text().strip().split(",")
    except FileNotFoundError:
        return ("/sys/kernel/security/lsm is missing (securityfs not mounted), so BPF LSM "
                "cannot be used: the pipeline runs on the syscall tracepoints")
    except OSError as e:
        return f"cannot read /sys/kernel/security/lsm ({e.strerror})"
    if "bpf" not in active:
        return ("BPF LSM is not active on this kernel (boot with lsm=...,bpf): the pipeline "
                "runs on the syscall tracepoints instead")
    return None
