"""Every byte a name or a comm can hold, through the drain's own C formatter
(`_core.format_event`, no kernel needed) and, for a sample, through the kernel path:
each line is strict JSON and the bytes recovered the README's way are the bytes given."""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import (
    CHROOTED,
    needs_root,
    parse_jsonl,
    parse_line,
    same_path_seen_by_kernel,
    wait_for,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import _core

NAME_KEEP = _core.NAME_KEEP  # 255: NAME_MAX, the record's name field less its NUL
PATH_CAP = _core.PATH_CAP  # 512: the record's path field (no NUL)
COMM_MAX = 15  # TASK_COMM_LEN less its NUL
KEYS = ["seq", "ts_ns", "wall_ns", "cpu", "pid", "tid", "ppid", "uid", "comm", "trigger",
        "syscall", "ret", "mode", "open_flags", "excl", "truncated", "path_truncated", "mnt_ns",
        "cgroup_id", "name", "path"]
TRIGGERS = ["none", "lsm", "tracepoint", "burst", "bench"]
SYSCALLS = ["none", "open", "openat", "openat2", "creat", "mknod", "mknodat", "mkdir",
            "mkdirat", "inode_create", "inode_mknod", "inode_mkdir", "getppid"]
U32, U64 = (1 << 32) - 1, (1 << 64) - 1


def utf8_len(b: bytes, i: int) -> int:
    """Bytes in the UTF-8 sequence starting at b[i] if it is valid, else 0."""
    lead = b[i]
    want = 1 if lead < 0x80 else 2 if 0xC2 <= lead <= 0xDF else \
        3 if 0xE0 <= lead <= 0xEF else 4 if 0xF0 <= lead <= 0xF4 else 0
    if not want or i + want > len(b):
        return 0
    try:
        b[i:i + want].decode("utf-8")  # strict: no overlong forms, surrogates, > U+10FFFF
    except UnicodeDecodeError:
        return 0
    return want


def shown(b: bytes) -> str:
    """What the README says the text field shows: valid sequences as themselves, each byte
    of an invalid one as U+FFFD."""
    out, i = [], 0
    while i < len(b):
        n = utf8_len(b, i)
        out.append(b[i:i + n].decode("utf-8") if n else "\ufffd")
        i += n or 1
    return "".join(out)


def recover(ev: dict[str, Any], field: str) -> bytes:
    """The exact bytes, as the README tells a consumer to get them."""
    if f"{field}_b64" in ev:
        return base64.b64decode(ev[f"{field}_b64"], validate=True)
    return str(ev[field]).encode("utf-8")  # strict: a lone surrogate escape fails here


def check_text_field(ev: dict[str, Any], field: str, given_bytes: bytes) -> None:
    assert recover(ev, field) == given_bytes, (field, given_bytes, ev)
    assert ev[field] == shown(given_bytes), (field, given_bytes, ev)
    try:
        given_bytes.decode("utf-8")
        valid = True
    except UnicodeDecodeError:
        valid = False
    # the base64 copy is there exactly when the text alone cannot carry the bytes
    assert (f"{field}_b64" not in ev) == valid, (field, given_bytes, ev)


# -- strategies ------------------------------------------------------------------------------

CONTROL = [*range(1, 0x20), 0x7F]
raw_byte = st.one_of(st.integers(1, 255), st.sampled_from(CONTROL),
                     st.sampled_from([0x22, 0x5C, 0x2F, 0xC0, 0xED, 0xF4, 0xF5, 0xFF, 0x80]))
utf8_piece = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]),
                     min_size=1, max_size=8).map(lambda t: t.encode("utf-8"))


def byte_names(max_size: int) -> st.SearchStrategy[bytes]:
    """Raw bytes 1..255, valid UTF-8 of any plane, and the two mixed, up to max_size bytes."""
    raw = st.lists(raw_byte, min_size=1, max_size=max_size).map(bytes)
    pieces = st.lists(st.one_of(utf8_piece, raw_byte.map(lambda c: bytes([c]))),
                      min_size=1, max_size=max_size).map(lambda ps: b"".join(ps)[:max_size])
    full = st.lists(raw_byte, min_size=max_size, max_size=max_size).map(bytes)
    return st.one_of(raw, pieces, full).filter(lambda b: 0 < len(b) <= max_size)


names = byte_names(NAME_KEEP)
comms = byte_names(COMM_MAX)
paths = byte_names(PATH_CAP)
# names of 255 drawn bytes are slow to generate on a loaded machine: that is not a failure
SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]


# -- the formatter alone ---------------------------------------------------------------------

@settings(max_examples=800, deadline=None, suppress_health_check=SLOW_OK)
@given(name=names, comm=comms, path=paths)
def test_any_name_comm_and_path_come_back_exactly(name: bytes, comm: bytes,
                                                  path: bytes) -> None:
    line = _core.format_event(name, comm, path=path)
    ev = parse_line(line)
    check_text_field(ev, "name", name)
    check_text_field(ev, "comm", comm)
    check_text_field(ev, "path", path)


@settings(max_examples=300, deadline=None, suppress_health_check=SLOW_OK)
@given(name=names, comm=comms, seq=st.integers(0, U64), ts=st.integers(0, 1 << 62),
       off=st.integers(-(1 << 62), 1 << 62), pid=st.integers(0, U32), tid=st.integers(0, U32),
       ppid=st.integers(0, U32), uid=st.integers(0, U32), cpu=st.integers(0, U32),
       mode=st.integers(0, U32), ret=st.integers(-(1 << 31), (1 << 31) - 1),
       trigger=st.integers(0, 255), syscall=st.integers(0, 255), flags=st.integers(0, U32),
       open_flags=st.integers(0, U32), path=st.one_of(st.just(b""), paths),
       mnt_ns=st.integers(0, U32), cgroup_id=st.integers(0, U64),
       filter_gen=st.integers(0, 0xFFFF))
def test_every_field_of_a_record(name: bytes, comm: bytes, seq: int, ts: int, off: int,
                                 pid: int, tid: int, ppid: int, uid: int, cpu: int, mode: int,
                                 ret: int, trigger: int, syscall: int, flags: int,
                                 open_flags: int, path: bytes, mnt_ns: int,
                                 cgroup_id: int, filter_gen: int) -> None:
    line = _core.format_event(name, comm, seq=seq, ts_ns=ts, wall_offset_ns=off, pid=pid,
                              tid=tid, ppid=ppid, uid=uid, cpu=cpu, mode=mode, ret=ret,
                              trigger=trigger, syscall=syscall, flags=flags,
                              open_flags=open_flags, path=path, mnt_ns=mnt_ns,
                              cgroup_id=cgroup_id, filter_gen=filter_gen)
    ev = parse_line(line)
    extra = [k for k in ("name_b64", "path_b64", "comm_b64") if k in ev]
    # filter_gen only where the record says a filter judged it
    keys = KEYS if not flags & 8 else [*KEYS[:KEYS.index("name")], "filter_gen",
                                         *KEYS[KEYS.index("name"):]]
    assert list(ev) == keys + extra
    assert ev.get("filter_gen") == (filter_gen if flags & 8 else None)
    assert (ev["seq"], ev["ts_ns"], ev["wall_ns"], ev["cpu"], ev["pid"], ev["tid"],
            ev["ppid"], ev["uid"], ev["ret"], ev["mode"], ev["open_flags"], ev["mnt_ns"],
            ev["cgroup_id"]) == (
        seq, ts, ts + off, cpu, pid, tid, ppid, uid, ret, mode, open_flags, mnt_ns, cgroup_id)
    assert ev["trigger"] == (TRIGGERS[trigger] if trigger < len(TRIGGERS) else "unknown")
    assert ev["syscall"] == (SYSCALLS[syscall] if syscall < len(SYSCALLS) else "unknown")
    assert ev["excl"] is bool(flags & 2) and ev["truncated"] is bool(flags & 1)
    assert ev["path_truncated"] is bool(flags & 4)
    check_text_field(ev, "name", name)
    check_text_field(ev, "comm", comm)
    check_text_field(ev, "path", path)


def test_each_byte_alone_and_between_text() -> None:
    """Every byte value 1..255, deterministically: alone, between ASCII, after a multi-byte
    character, and as the whole comm."""
    for c in range(1, 256):
        b = bytes([c])
        for name in (b, b"a" + b + b"z", "é".encode() + b + "✓".encode(), b * NAME_KEEP):
            ev = parse_line(_core.format_event(name, b * COMM_MAX))
            check_text_field(ev, "name", name)
            check_text_field(ev, "comm", b * COMM_MAX)


# Sequences at each edge of UTF-8's validity (RFC 3629): the last valid and first invalid
# lead/continuation pairs, overlong forms, surrogates, code points past U+10FFFF and
# truncated sequences. Drawn byte by byte, these are too rare to rely on chance.
UTF8_EDGES = [
    b"\x7f", b"\xc2\x80", b"\xdf\xbf", b"\xc0\x80", b"\xc1\xbf",
    b"\xe0\xa0\x80", b"\xe0\x9f\xbf", b"\xed\x9f\xbf", b"\xed\xa0\x80", b"\xed\xbf\xbf",
    b"\xee\x80\x80", b"\xef\xbf\xbf",
    b"\xf0\x90\x80\x80", b"\xf0\x8f\xbf\xbf", b"\xf4\x8f\xbf\xbf", b"\xf4\x90\x80\x80",
    b"\xf5\x80\x80\x80", b"\xf7\xbf\xbf\xbf", b"\xf8\x88\x80\x80\x80",
    b"\xe2\x82", b"\xf0\x9f\x98", b"\x80", b"\xbf",
]


def test_utf8_edges_come_back_exactly() -> None:
    for seq in UTF8_EDGES:
        for name in (seq, b"a" + seq + b"z", seq + seq, b"x" * (NAME_KEEP - len(seq)) + seq):
            ev = parse_line(_core.format_event(name, seq[:COMM_MAX]))
            check_text_field(ev, "name", name)
            check_text_field(ev, "comm", seq[:COMM_MAX])


def test_record_limits_are_enforced() -> None:
    for bad_name in (b"", b"x" * (NAME_KEEP + 1), b"a\0b"):
        try:
            _core.format_event(bad_name, b"c")
        except _core.CoreError:
            continue
        raise AssertionError(f"accepted name {bad_name!r}")
    for bad_comm in (b"c" * (COMM_MAX + 1), b"a\0"):
        try:
            _core.format_event(b"n", bad_comm)
        except _core.CoreError:
            continue
        raise AssertionError(f"accepted comm {bad_comm!r}")
    for bad_path in (b"/" * (PATH_CAP + 1), b"/a\0"):
        try:
            _core.format_event(b"n", b"c", path=bad_path)
        except _core.CoreError:
            continue
        raise AssertionError(f"accepted path {bad_path!r}")
    # the longest path the field holds, every byte of it
    whole = b"/" + b"\xff" * (PATH_CAP - 1)
    check_text_field(parse_line(_core.format_event(b"n", b"c", path=whole)), "path", whole)


# -- a sample through the kernel -------------------------------------------------------------

# For each (name, comm): set the thread's comm with prctl(PR_SET_NAME), then create the name
# relative to the work directory, so the fallback's path argument is the name itself.
CREATOR = r"""
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_NAME = 15
sys.stdin.readline()
job = json.loads(sys.stdin.readline())
fd = os.open(job["dir"], os.O_RDONLY | os.O_DIRECTORY)
for name, comm in zip(job["names"], job["comms"]):
    if libc.prctl(PR_SET_NAME, ctypes.c_char_p(bytes.fromhex(comm)), 0, 0, 0) != 0:
        sys.exit(f"prctl: errno {ctypes.get_errno()}")
    os.close(os.open(bytes.fromhex(name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600,
                     dir_fd=fd))
"""


def kernel_sample(seed: int, count: int) -> tuple[list[bytes], list[bytes]]:
    """Names a dentry can hold (bytes 1..255 but '/', not '.' or '..') of lengths 1..255,
    with every control character among them, and comms of 1..15 bytes 1..255."""
    rng = random.Random(seed)
    pool = [c for c in range(1, 256) if c != 0x2F]
    ctl = list(CONTROL)
    fixed = [bytes(ctl), b"\r", b"\x1f", b"a\rb\x1fc\n", b"\xff" * NAME_KEEP,
             "é".encode() * 127 + b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf"]
    names: list[bytes] = list(fixed)
    while len(names) < count:
        n = rng.choice([1, 2, rng.randrange(1, NAME_KEEP + 1), NAME_KEEP])
        name = bytes(rng.choice(pool if rng.random() < 0.7 else ctl) for _ in range(n))
        if name not in (b".", b"..") and name not in names:
            names.append(name)
    comms = [b"\r", b"\x1f", bytes(ctl[:COMM_MAX]), b"\xff" * COMM_MAX]
    while len(comms) < count:
        comms.append(bytes(rng.randrange(1, 256) for _ in range(rng.randrange(1, COMM_MAX + 1))))
    return names, comms


@needs_root
def test_sample_through_the_kernel(tmp_path: Path, pin_root: Path, pipeline_proc: Any,
                                   reap: Any) -> None:
    names, comms = kernel_sample(1729, 50)
    work = tmp_path / "w"
    work.mkdir()
    out = tmp_path / "names.jsonl"
    child = reap(subprocess.Popen([sys.executable, "-c", CREATOR], stdin=subprocess.PIPE))
    with open(out, "wb") as so:
        pl = pipeline_proc("--sink", "stdout", "--trigger", "tracepoint", "--filter-pid",
                           str(child.pid), "--pin-dir", str(pin_root), stdout=so)
    job = {"dir": str(work), "names": [n.hex() for n in names], "comms": [c.hex() for c in comms]}
    assert child.stdin is not None
    child.stdin.write(b"go\n" + json.dumps(job).encode() + b"\n")
    child.stdin.close()
    assert child.wait(30) == 0
    wait_for(lambda: out.read_bytes().count(b"\n") >= len(names), 10, "every name")
    assert pl.stop() == 0, pl.stderr()
    events = parse_jsonl(out.read_bytes())
    assert len(events) == len(names) == pl.final()["read"]
    assert {(e["pid"], e["tid"]) for e in events} == {(child.pid, child.pid)}
    for e, name, comm in zip(events, names, comms, strict=True):
        check_text_field(e, "name", name)
        check_text_field(e, "comm", comm)
        # the path in the kernel is made of the same bytes, from the dentries
        want = os.fsencode(os.path.realpath(work)) + b"/" + name
        if CHROOTED:  # the kernel's path starts with the chroot's location (conftest)
            assert same_path_seen_by_kernel(recover(e, "path"), want), (want, e)
        else:
            check_text_field(e, "path", want)
        assert e["truncated"] is False and e["excl"] is True and e["path_truncated"] is False
