"""The tracepoint fallback reports what the LSM hook would: each
file-creating syscall that succeeded, once, and nothing for failed calls."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    StartPipeline,
    needs_root,
    read_jsonl,
    run_pipeline,
    same_path_seen_by_kernel,
    wait_for,
)

pytestmark = needs_root

# Each call made with its raw syscall number (x86-64), so the syscall is exactly
# the one named; prints {"pid": ..., "results": {label: return value}}.
CALLER = r"""
import ctypes, json, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
d = sys.argv[1].encode()
AT_FDCWD = -100
O_WRONLY, O_CREAT, O_EXCL = 0o1, 0o100, 0o200
S_IFREG, S_IFIFO = 0o100000, 0o10000
def p(name): return d + b"/" + name
def sc(*a):
    r = libc.syscall(*a)
    if r >= 0 and a[0] in (2, 85, 257, 437): os.close(r)
    return r if r >= 0 else -ctypes.get_errno()
how = struct.pack("QQQ", O_CREAT | O_WRONLY, 0o600, 0)
res = {
  "open": sc(2, p(b"f-open"), O_CREAT | O_WRONLY, 0o600),
  "openat": sc(257, AT_FDCWD, p(b"f-openat"), O_CREAT | O_WRONLY, 0o600),
  "openat_excl": sc(257, AT_FDCWD, p(b"f-excl"), O_CREAT | O_EXCL | O_WRONLY, 0o600),
  "openat2": sc(437, AT_FDCWD, p(b"f-openat2"), how, len(how)),
  "creat": sc(85, p(b"f-creat"), 0o600),
  "mknod": sc(133, p(b"f-mknod"), S_IFREG | 0o600, 0),
  "mknodat": sc(259, AT_FDCWD, p(b"f-mknodat"), S_IFIFO | 0o600, 0),
  "mkdir": sc(83, p(b"d-mkdir"), 0o700),
  "mkdirat": sc(258, AT_FDCWD, p(b"d-mkdirat"), 0o700),
  # failures: nothing is created, nothing may be reported
  "fail_noent": sc(257, AT_FDCWD, p(b"missing/f-fail"), O_CREAT | O_WRONLY, 0o600),
  "fail_exist_dir": sc(83, p(b"d-mkdir"), 0o700),
  "fail_excl": sc(257, AT_FDCWD, p(b"f-excl"), O_CREAT | O_EXCL | O_WRONLY, 0o600),
  "fail_mknod": sc(133, p(b"f-mknod"), S_IFREG | 0o600, 0),
  # no O_CREAT: an open, not a creation
  "plain_open": sc(257, AT_FDCWD, p(b"f-openat"), 0, 0),
}
print(json.dumps({"pid": os.getpid(), "results": res}))
"""

EXPECTED = {  # name -> syscall the record must name
    "f-open": "open", "f-openat": "openat", "f-excl": "openat", "f-openat2": "openat2",
    "f-creat": "creat", "f-mknod": "mknod", "f-mknodat": "mknodat", "d-mkdir": "mkdir",
    "d-mkdirat": "mkdirat",
}


def test_each_creating_syscall(tmp_path: Path, pin_root: Path,
                               pipeline_proc: StartPipeline) -> None:
    out = tmp_path / "ev.jsonl"
    work = tmp_path / "w"
    work.mkdir()
    pl = pipeline_proc("--sink", "jsonl", "--output", str(out), "--trigger", "tracepoint",
                       "--pin-dir", str(pin_root))
    res = subprocess.run([sys.executable, "-c", CALLER, str(work)], capture_output=True,
                         text=True, check=True)
    report = json.loads(res.stdout)
    r = report["results"]
    assert all(r[k] >= 0 for k in ("open", "openat", "openat_excl", "openat2", "creat", "mknod",
                                   "mknodat", "mkdir", "mkdirat", "plain_open")), r
    assert all(r[k] < 0 for k in ("fail_noent", "fail_exist_dir", "fail_excl", "fail_mknod")), r

    def mine() -> list[dict[str, object]]:
        if not out.exists():
            return []
        return [e for e in read_jsonl(out) if e["pid"] == report["pid"]]

    wait_for(lambda: len(mine()) >= len(EXPECTED), 5, "the syscall events")
    assert pl.stop() == 0
    events = mine()
    got = {Path(str(e["name"])).name: e for e in events}
    assert len(events) == len(EXPECTED), [e["name"] for e in events]
    assert {k: v["syscall"] for k, v in got.items()} == EXPECTED
    assert all(e["trigger"] == "tracepoint" for e in events)
    assert got["f-excl"]["excl"] is True and got["f-openat"]["excl"] is False
    assert got["f-openat2"]["mode"] == 0o600 and got["d-mkdir"]["mode"] == 0o700
    assert all(str(e["name"]).startswith(str(work)) for e in events)
    # each call's own arguments give its path (the exit program reads them back)
    wrong = {k: v["path"] for k, v in got.items()
             if not same_path_seen_by_kernel(v["path"], str(work / k))}
    assert not wrong and set(got) == set(EXPECTED), wrong


def test_lsm_trigger(tmp_path: Path, pin_root: Path, pipeline_proc: StartPipeline) -> None:
    probe = run_pipeline("--trigger", "lsm", "--duration", "0.3", "--pin-dir", str(pin_root))
    if probe.returncode != 0:
        pytest.skip(f"BPF LSM cannot attach on this kernel: {probe.stderr.strip()}")
    out = tmp_path / "lsm.jsonl"
    pl = pipeline_proc("--sink", "jsonl", "--output", str(out), "--trigger", "lsm",
                       "--pin-dir", str(pin_root))
    target = tmp_path / "lsm-created"
    target.touch()
    wait_for(lambda: out.exists() and any(e["name"] == target.name for e in read_jsonl(out)),
             5, "the LSM event")
    assert pl.stop() == 0
    ev = [e for e in read_jsonl(out) if e["name"] == target.name]
    assert len(ev) == 1 and ev[0]["trigger"] == "lsm" and ev[0]["syscall"] == "inode_create"
