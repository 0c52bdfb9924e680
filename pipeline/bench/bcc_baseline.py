#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The BCC baseline the benchmark measures the project's pipeline against.

The same load, the same record, the usual BCC way: a RAW_TRACEPOINT_PROBE on
sys_enter (the tracepoint the project's load program hooks), filtered on
getppid's syscall number, fills a 856-byte record (the layout of struct ap_event in
include/event.h) in a BPF ring buffer, and a Python callback decodes each
record with ctypes, encodes it with the json module and writes it as one line
to a file, as a BCC tool would.

Run it with Debian's /usr/bin/python3 (where python3-bpfcc puts bcc), as root,
after scripts/setup-bcc.sh:

    BCC_KERNEL_SOURCE=$(scripts/setup-bcc.sh) \\
        taskset -c 1 /usr/bin/python3 pipeline/bench/bcc_baseline.py \\
        --output /tmp/bcc.jsonl --duration 3 --pid "$LOADGEN_PID" \\
        --ready-file /tmp/bcc.ready

It polls for --duration seconds from the moment it is attached (announced by
creating --ready-file), then prints one JSON object on stdout:

    {"written": ..., "lost_kernel": ..., "produced": ..., "lost": ...,
     "seconds": ..., "events_per_s": ...}

produced is the kernel's sequence counter (every event the program saw),
lost_kernel the reservations the full ring buffer refused, written the lines
in the output file, and lost = produced - written (refused by the ring, or
still in it when polling stopped).
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from typing import Any, NoReturn, TextIO

KHEADERS_DEFAULT = "/var/cache/arena-pipeline/kheaders/current"
VMLINUX_BTF = "/sys/kernel/btf/vmlinux"

# include/event.h: enum ap_trigger, enum ap_syscall, and the names the
# project's JSON lines use for them (pipeline/_core/jsonfmt.c).
AP_TRIGGER_BENCH = 4
AP_SYS_GETPPID = 12
TRIGGER_NAMES = {0: "none", 1: "lsm", 2: "tracepoint", 3: "burst", 4: "bench"}
SYSCALL_NAMES = {0: "none", 12: "getppid"}
AP_EV_TRUNCATED = 0x1
AP_EV_EXCL = 0x2
AP_EV_PATH_TRUNCATED = 0x4
AP_COMM_LEN = 16
AP_NAME_CAP = 256
AP_PATH_CAP = 512
AP_EVENT_SIZE = 88 + AP_NAME_CAP + AP_PATH_CAP


class Event(ctypes.Structure):
    """struct ap_event of include/event.h, field for field, as the ring buffer delivers
    it. The BPF program's struct is written out from these fields (event_struct_c);
    tests/test_bcc_layout.py compiles that against the header."""

    _fields_ = [
        ("seq", ctypes.c_uint64),
        ("ts_ns", ctypes.c_uint64),
        ("tid", ctypes.c_uint32),
        ("pid", ctypes.c_uint32),
        ("ppid", ctypes.c_uint32),
        ("uid", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("mode", ctypes.c_uint32),
        ("ret", ctypes.c_int32),
        ("name_len", ctypes.c_uint16),
        ("trigger", ctypes.c_uint8),
        ("syscall", ctypes.c_uint8),
        ("flags", ctypes.c_uint32),
        ("open_flags", ctypes.c_uint32),
        ("mnt_ns", ctypes.c_uint32),
        ("path_len", ctypes.c_uint16),
        ("filter_gen", ctypes.c_uint16),
        ("cgroup_id", ctypes.c_uint64),
        ("comm", ctypes.c_char * AP_COMM_LEN),
        ("name", ctypes.c_char * AP_NAME_CAP),
        ("path", ctypes.c_char * AP_PATH_CAP),  # the path is its last path_len bytes
    ]


# ctypes type -> the name BCC's headers give it
_C_TYPES: dict[Any, str] = {
    ctypes.c_uint64: "u64", ctypes.c_uint32: "u32", ctypes.c_int32: "s32",
    ctypes.c_uint16: "u16", ctypes.c_uint8: "u8", ctypes.c_char: "char",
}


def event_struct_c(tag: str = "bench_event") -> str:
    """Event's fields as a C struct declaration for the BPF program."""
    lines = []
    for field in Event._fields_:
        name, ctype = field[0], field[1]
        if issubclass(ctype, ctypes.Array):
            lines.append(f"    {_C_TYPES[ctype._type_]} {name}[{ctype._length_}];\n")
        else:
            lines.append(f"    {_C_TYPES[ctype]} {name};\n")
    return (f"struct {tag} {{\n{''.join(lines)}}};\n"
            f'_Static_assert(sizeof(struct {tag}) == {AP_EVENT_SIZE}, "ap_event layout");\n')


assert ctypes.sizeof(Event) == AP_EVENT_SIZE, "Event does not match struct ap_event"

# The BPF side. OFF_REAL_PARENT and OFF_TGID (offsets in struct task_struct)
# come from the running kernel's BTF: the headers BCC compiles against are
# Debian's, not this kernel's, and their struct layouts differ.
BPF_TEXT = r"""
#ifdef OFF_FROM_HEADERS
#include <linux/sched.h>
#define OFF_REAL_PARENT offsetof(struct task_struct, real_parent)
#define OFF_TGID offsetof(struct task_struct, tgid)
#endif

/* struct bench_event (struct ap_event) goes first: event_struct_c(). */

BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_ARRAY(seq_counter, u64, 1);   /* events seen: the next seq */
BPF_ARRAY(lost_counter, u64, 1);  /* reservations the ring refused */

/* The raw sys_enter tracepoint, as the project's load program uses:
 * args[1] is the syscall number. */
RAW_TRACEPOINT_PROBE(sys_enter)
{
    if (ctx->args[1] != GETPPID_NR)
        return 0;

    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tgid = pid_tgid >> 32;
    int zero = 0;

    if (TARGET_TGID && tgid != TARGET_TGID)
        return 0;

    u64 *seqp = seq_counter.lookup(&zero);
    if (!seqp)
        return 0;
    /* Taken before reserving: a dropped event uses up its seq too. */
    u64 seq = __sync_fetch_and_add(seqp, 1);

    struct bench_event *ev = events.ringbuf_reserve(sizeof(struct bench_event));
    if (!ev) {
        u64 *lostp = lost_counter.lookup(&zero);
        if (lostp)
            __sync_fetch_and_add(lostp, 1);
        return 0;
    }

    char *task = (char *)bpf_get_current_task();
    char *parent = NULL;
    u32 ppid = 0;
    bpf_probe_read_kernel(&parent, sizeof(parent), task + OFF_REAL_PARENT);
    if (parent)
        bpf_probe_read_kernel(&ppid, sizeof(ppid), parent + OFF_TGID);

    ev->seq = seq;
    ev->ts_ns = bpf_ktime_get_ns();
    ev->tid = (u32)pid_tgid;
    ev->pid = tgid;
    ev->ppid = ppid;
    ev->uid = (u32)bpf_get_current_uid_gid();
    ev->cpu = bpf_get_smp_processor_id();
    ev->mode = 0;
    ev->ret = 0;
    ev->name_len = 7;
    ev->trigger = AP_TRIGGER_BENCH;
    ev->syscall = AP_SYS_GETPPID;
    ev->flags = 0;
    ev->open_flags = 0;
    ev->mnt_ns = 0;
    ev->path_len = 0;  /* no path: path[] is never read */
    ev->filter_gen = 0;
    ev->cgroup_id = bpf_get_current_cgroup_id();
    bpf_get_current_comm(ev->comm, sizeof(ev->comm));
    /* Reserved memory is not zeroed: clear the whole name, then "getppid". */
    __builtin_memset(ev->name, 0, sizeof(ev->name));
    ev->name[0] = 'g';
    ev->name[1] = 'e';
    ev->name[2] = 't';
    ev->name[3] = 'p';
    ev->name[4] = 'p';
    ev->name[5] = 'i';
    ev->name[6] = 'd';

    events.ringbuf_submit(ev, 0);
    return 0;
}
"""


# getppid's syscall number per architecture (asm/unistd.h): the raw sys_enter
# tracepoint fires for every syscall and hands over the number.
GETPPID_NR = {"x86_64": 110, "aarch64": 173}


def getppid_nr() -> int:
    machine = platform.machine()
    if machine not in GETPPID_NR:
        die(f"getppid's syscall number on {machine} is not known here; add it to GETPPID_NR")
    return GETPPID_NR[machine]


# ---- task_struct offsets from the running kernel's BTF -----------------------

# bpftool's names of the BTF kinds that only qualify or rename another type
_BTF_MODIFIERS = {"TYPEDEF", "VOLATILE", "CONST", "RESTRICT", "TYPE_TAG"}


def btf_types(path: str) -> dict[int, dict[str, Any]]:
    """Every type of a BTF blob (or of an object file's .BTF), by id, as bpftool reads it."""
    bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    try:
        res = subprocess.run([bpftool, "-j", "btf", "dump", "file", path],
                             capture_output=True, text=True, check=False)
    except OSError as e:
        raise ValueError(f"cannot run bpftool ({e.strerror}): run make setup") from e
    if res.returncode != 0:
        why = (res.stderr.strip().splitlines() or ["no message"])[-1]
        raise ValueError(f"bpftool cannot read the BTF of {path}: {why}")
    return {t["id"]: t for t in json.loads(res.stdout)["types"]}


def member_offsets(types: dict[int, dict[str, Any]], struct: str) -> dict[str, int]:
    """Byte offset of each member of struct STRUCT, the members of its anonymous structs
    and unions included (bitfields: of the byte holding their first bit)."""
    top = next((t for t in types.values() if t["kind"] == "STRUCT" and t["name"] == struct),
               None)
    if top is None:
        raise ValueError(f"struct {struct} not in BTF")

    def walk(t: dict[str, Any], base: int, out: dict[str, int]) -> dict[str, int]:
        for m in t["members"]:
            at = base + m["bits_offset"] // 8
            if m["name"] != "(anon)":
                out.setdefault(m["name"], at)
                continue
            inner = types[m["type_id"]]
            while inner["kind"] in _BTF_MODIFIERS:
                inner = types[inner["type_id"]]
            if inner["kind"] in ("STRUCT", "UNION"):
                walk(inner, at, out)
        return out

    return walk(top, 0, {})


def task_struct_offsets(path: str = VMLINUX_BTF) -> tuple[int, int]:
    """Byte offsets of real_parent and tgid in the running kernel's task_struct."""
    offsets = member_offsets(btf_types(path), "task_struct")
    if "real_parent" not in offsets or "tgid" not in offsets:
        raise ValueError("task_struct has no real_parent or tgid")
    return offsets["real_parent"], offsets["tgid"]


# ---- the run -----------------------------------------------------------------

def die(msg: str, code: int = 1) -> NoReturn:
    print(f"bcc_baseline: {msg}", file=sys.stderr)
    sys.exit(code)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="BCC baseline: getppid tracepoint -> ring buffer -> Python callback "
                    "-> one JSON encode per event -> JSONL file")
    p.add_argument("--output", required=True, help="JSONL file to create (must not exist)")
    p.add_argument("--duration", required=True, type=float,
                   help="seconds to poll, counted from attach (ready file)")
    p.add_argument("--ringbuf-pages", type=int, default=256,
                   help="ring buffer size in pages, a power of two (default 256: 1 MiB)")
    p.add_argument("--ready-file", help="created once the probe is attached (must not exist)")
    p.add_argument("--pid", type=int, default=0,
                   help="only count getppid calls of this process (tgid); 0: all")
    a = p.parse_args(argv)
    if not a.duration > 0:
        p.error("--duration must be > 0")
    n = a.ringbuf_pages
    if n < 1 or n & (n - 1):
        p.error("--ringbuf-pages must be a power of two")
    if a.pid < 0:
        p.error("--pid must be >= 0")
    return a


def kernel_source_env() -> None:
    """Point BCC at the headers scripts/setup-bcc.sh unpacked, unless told otherwise."""
    if os.environ.get("BCC_KERNEL_SOURCE"):
        return
    if os.path.isdir(f"/lib/modules/{os.uname().release}/build"):
        return
    if os.path.isdir(KHEADERS_DEFAULT):
        os.environ["BCC_KERNEL_SOURCE"] = os.path.realpath(KHEADERS_DEFAULT)
        return
    die("no kernel headers for BCC: run scripts/setup-bcc.sh as root and set "
        "BCC_KERNEL_SOURCE to the directory it prints")


# Run as root with paths a user gives (in /tmp, say): a file is only ever created, never
# opened through a link or reused, so a link or file planted at the name is refused.
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY


def create_new(path: str) -> int:
    try:
        return os.open(path, _CREATE, 0o600)
    except FileExistsError:
        die(f"{path} already exists (it may be a link): give a path that does not exist yet")
    except OSError as e:
        die(f"cannot create {path}: {e.strerror}")


def write_ready(path: str) -> None:
    # Created whole, in one step: a reader polling for the name never sees it empty.
    tmp = f"{path}.tmp.{os.getpid()}"
    with os.fdopen(create_new(tmp), "w") as f:
        f.write(f"{os.getpid()}\n")
    try:
        os.link(tmp, path)  # unlike a rename, fails if anything (a link too) holds the name
    except OSError as e:
        os.unlink(tmp)
        die(f"cannot create {path}: {e.strerror}; give a path that does not exist yet")
    os.unlink(tmp)


def text_field(raw: bytes) -> tuple[str, str | None]:
    """A C string as JSON text, and base64 of its bytes if not valid UTF-8."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace"), base64.b64encode(raw).decode("ascii")


class _Run:
    """What the ring buffer callback shares with the polling loop."""

    def __init__(self, stop_at: float) -> None:
        self.written = 0
        self.stop_at = stop_at
        self.error: BaseException | None = None


def consume(b: Any, out: TextIO, duration: float, ready_file: str | None) -> dict[str, Any]:
    """Poll the ring buffer for duration seconds, one JSON line per event."""
    # CLOCK_MONOTONIC (bpf_ktime_get_ns) -> wall clock, as the pipeline does.
    wall_offset = time.time_ns() - time.monotonic_ns()
    run = _Run(stop_at=0.0)
    write = out.write
    # json.dumps with non-default arguments builds a new encoder per call; a
    # tool writing compact lines keeps one.
    encode = json.JSONEncoder(separators=(",", ":")).encode
    from_address = Event.from_address
    string_at = ctypes.string_at
    path_end = Event.path.offset + AP_PATH_CAP
    trigger_names = TRIGGER_NAMES
    syscall_names = SYSCALL_NAMES
    monotonic = time.monotonic

    def on_event(_ctx: Any, data: int, _size: int) -> int:
        try:
            ev = from_address(data)  # a view of the ring's memory, no copy
            name, name_b64 = text_field(ev.name[:min(ev.name_len, AP_NAME_CAP - 1)])
            comm, comm_b64 = text_field(ev.comm)
            # the path ends at the end of its field
            plen = min(ev.path_len, AP_PATH_CAP)
            path, path_b64 = text_field(string_at(data + path_end - plen, plen))
            flags = ev.flags
            rec = {
                "seq": ev.seq,
                "ts_ns": ev.ts_ns,
                "wall_ns": ev.ts_ns + wall_offset,
                "cpu": ev.cpu,
                "pid": ev.pid,
                "tid": ev.tid,
                "ppid": ev.ppid,
                "uid": ev.uid,
                "comm": comm,
                "trigger": trigger_names.get(ev.trigger, "unknown"),
                "syscall": syscall_names.get(ev.syscall, "unknown"),
                "ret": ev.ret,
                "mode": ev.mode,
                "open_flags": ev.open_flags,
                "excl": bool(flags & AP_EV_EXCL),
                "truncated": bool(flags & AP_EV_TRUNCATED),
                "path_truncated": bool(flags & AP_EV_PATH_TRUNCATED),
                "mnt_ns": ev.mnt_ns,
                "cgroup_id": ev.cgroup_id,
                "name": name,
                "path": path,
            }
            if name_b64 is not None:
                rec["name_b64"] = name_b64
            if path_b64 is not None:
                rec["path_b64"] = path_b64
            if comm_b64 is not None:
                rec["comm_b64"] = comm_b64
            write(encode(rec) + "\n")
            run.written += 1
            # One poll drains the ring until it is empty, which a faster
            # producer never lets happen: look at the clock now and then and
            # end the poll (a negative return) once the time is up.
            if not run.written & 255 and monotonic() >= run.stop_at:
                return -1
            return 0
        except BaseException as e:  # keep it: ctypes would only print it
            run.error = e
            return -1

    b["events"].open_ring_buffer(on_event)

    start = monotonic()
    run.stop_at = start + duration
    if ready_file:
        write_ready(ready_file)
    while run.error is None:
        left = run.stop_at - monotonic()
        if left <= 0:
            break
        b.ring_buffer_poll(max(1, min(100, int(left * 1000))))
    seconds = monotonic() - start
    if run.error is not None:
        if isinstance(run.error, KeyboardInterrupt):
            raise run.error
        die(f"event callback failed: {run.error!r}")

    zero = ctypes.c_int(0)
    produced = int(b["seq_counter"][zero].value)
    lost_kernel = int(b["lost_counter"][zero].value)
    return {
        "written": run.written,
        "lost_kernel": lost_kernel,
        "produced": produced,
        "lost": produced - run.written,
        "seconds": round(seconds, 6),
        "events_per_s": round(run.written / seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        die("needs root (loading BPF programs)")
    try:
        bcc = importlib.import_module("bcc")
    except ImportError:
        die("cannot import bcc: run with /usr/bin/python3 after scripts/setup-bcc.sh "
            "(python3-bpfcc is installed for Debian's Python only)")
    kernel_source_env()

    cflags = [
        "-w",  # Debian's 6.12 headers warn under BCC's clang 14; none of it is ours
        f"-DTARGET_TGID={args.pid}",
        f"-DGETPPID_NR={getppid_nr()}",
        f"-DRINGBUF_PAGES={args.ringbuf_pages}",
        f"-DAP_TRIGGER_BENCH={AP_TRIGGER_BENCH}",
        f"-DAP_SYS_GETPPID={AP_SYS_GETPPID}",
    ]
    try:
        off_parent, off_tgid = task_struct_offsets()
        cflags += [f"-DOFF_REAL_PARENT={off_parent}", f"-DOFF_TGID={off_tgid}"]
    except (OSError, ValueError) as e:
        print(f"bcc_baseline: warning: {e}; ppid from the header layout may be wrong",
              file=sys.stderr)
        cflags.append("-DOFF_FROM_HEADERS")

    out = os.fdopen(create_new(args.output), "w", encoding="utf-8")
    with out:
        try:
            # RAW_TRACEPOINT_PROBE attaches here
            b = bcc.BPF(text=event_struct_c() + BPF_TEXT, cflags=cflags)
        except Exception as e:  # bcc raises plain Exception on compile/load errors
            die(f"BPF program did not load: {e}")
        try:
            result = consume(b, out, args.duration, args.ready_file)
        finally:
            b.cleanup()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
