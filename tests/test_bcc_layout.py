"""The BCC baseline's pieces that need no BCC (pipeline/bench/bcc_baseline.py): the record
it declares for its BPF program is include/event.h's struct ap_event, and its reading of
BTF through bpftool finds the members of nested anonymous structs and unions."""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.bench import bcc_baseline as bcc

ROOT = Path(__file__).resolve().parent.parent
FIELDS = [f[0] for f in bcc.Event._fields_]


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (make setup installs it)")
    return path


def test_record_is_struct_ap_event(tmp_path: Path) -> None:
    """gcc compiles the generated struct beside the header's and holds every offset and the
    size to it: a field added to, moved in or resized in event.h fails here."""
    checks = "".join(
        f"_Static_assert(offsetof(struct bench_event, {f}) == offsetof(struct ap_event, {f}) &&"
        f" sizeof(((struct bench_event *)0)->{f}) == sizeof(((struct ap_event *)0)->{f}),"
        f' "{f}");\n' for f in FIELDS)
    src = tmp_path / "layout.c"
    src.write_text(
        "#include <stddef.h>\n#include <stdint.h>\n#include \"event.h\"\n"
        "typedef uint64_t u64; typedef uint32_t u32; typedef int32_t s32;\n"
        "typedef uint16_t u16; typedef uint8_t u8;\n"
        + bcc.event_struct_c()
        + "_Static_assert(sizeof(struct bench_event) == sizeof(struct ap_event), \"size\");\n"
        + checks)
    res = subprocess.run([_tool("gcc"), "-fsyntax-only", "-Wall", "-Wextra", "-Werror",
                          f"-I{ROOT / 'include'}", str(src)],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    assert set(FIELDS) >= {"seq", "ts_ns", "comm", "name", "open_flags"}
    assert ctypes.sizeof(bcc.Event) == bcc.AP_EVENT_SIZE


def test_record_check_can_fail(tmp_path: Path) -> None:
    """The same compile refuses a struct that differs from the header's by one field."""
    src = tmp_path / "bad.c"
    wrong = bcc.event_struct_c().replace("u32 mode;", "u64 mode;")
    assert wrong != bcc.event_struct_c()
    src.write_text("#include <stddef.h>\n#include <stdint.h>\n#include \"event.h\"\n"
                   "typedef uint64_t u64; typedef uint32_t u32; typedef int32_t s32;\n"
                   "typedef uint16_t u16; typedef uint8_t u8;\n" + wrong)
    res = subprocess.run([_tool("gcc"), "-fsyntax-only", f"-I{ROOT / 'include'}", str(src)],
                         capture_output=True, text=True, check=False)
    assert res.returncode != 0 and "ap_event layout" in res.stderr


NESTED = """
#include <stddef.h>
typedef const struct { int in_typedef; } hidden_t;
struct probe {
    char head;
    union { long in_union; struct { short deep_a; int deep_b; }; };
    unsigned bits_a : 3, bits_b : 9;
    hidden_t;
    void *tail;
};
"""


def test_member_offsets_from_bpftool(tmp_path: Path) -> None:
    """member_offsets over an object's BTF (clang -g, read by bpftool) gives what the
    compiler's offsetof gives, for members inside anonymous structs and unions too."""
    clang = _tool("clang-19") if shutil.which("clang-19") else _tool("clang")
    _tool("bpftool")
    names = ["head", "in_union", "deep_a", "deep_b", "tail"]
    obj = tmp_path / "probe.bpf.o"
    (tmp_path / "probe.c").write_text(NESTED + "struct probe probe_var;\n")
    subprocess.run([clang, "-g", "-O2", "-target", "bpf", "-fms-extensions",
                    "-Wno-microsoft-anon-tag", "-c", str(tmp_path / "probe.c"), "-o", str(obj)],
                   check=True)
    host = tmp_path / "offsets"
    printer = "".join(f'printf("\\"{n}\\": %zu,", offsetof(struct probe, {n}));' for n in names)
    (tmp_path / "host.c").write_text(
        NESTED + "#include <stdio.h>\nint main(void) { printf(\"{\"); " + printer
        + ' printf("\\"in_typedef\\": %zu}", offsetof(struct probe, in_typedef)); return 0; }\n')
    subprocess.run([clang, "-fms-extensions", "-Wno-microsoft-anon-tag",
                    str(tmp_path / "host.c"), "-o", str(host)], check=True)
    want = json.loads(subprocess.run([str(host)], capture_output=True, text=True,
                                     check=True).stdout)
    got = bcc.member_offsets(bcc.btf_types(str(obj)), "probe")
    assert {n: got[n] for n in want} == want
    assert got["bits_a"] == got["bits_b"] == want["deep_b"] + 4  # both in the word after
    with pytest.raises(ValueError, match="struct nosuch not in BTF"):
        bcc.member_offsets(bcc.btf_types(str(obj)), "nosuch")


def test_btf_types_names_a_bad_file(tmp_path: Path) -> None:
    _tool("bpftool")
    junk = tmp_path / "junk"
    junk.write_bytes(b"not BTF at all")
    with pytest.raises(ValueError, match="bpftool cannot read the BTF of"):
        bcc.btf_types(str(junk))
