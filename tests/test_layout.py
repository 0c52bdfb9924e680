"""include/ is the ground floor both sides compile: BPF objects (bpf/) and userspace (the C
extension in pipeline/_core, the C tests). Its headers must not reach up into bpf/ or
pipeline/, so each is checked twice: its quoted includes resolve inside include/, and it
compiles on its own with include/ as the only project directory on the include path, once as
userspace C (gcc) and once as BPF (clang-19, over the kernel's vmlinux.h)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INCLUDE = ROOT / "include"
HEADERS = sorted(INCLUDE.rglob("*.h"))
QUOTED = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)
ANGLED = re.compile(r"^\s*#\s*include\s+<([^>]+)>", re.MULTILINE)

# The BPF side of the headers names the arena map `arena` (the allocator grows the arena
# with bpf_arena_alloc_pages on it); every BPF object declares it (bpf/arena_map.bpf.h),
# so the test's own translation unit does too.
BPF_PRELUDE = """#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "arena/arena.h"
struct {
	__uint(type, BPF_MAP_TYPE_ARENA);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
} arena SEC(".maps");
"""


def _rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


def _resolve(header: Path, name: str) -> Path | None:
    """Where the compiler finds a quoted include with -Iinclude only: next to the
    including file first, then under include/."""
    for base in (header.parent, INCLUDE):
        cand = (base / name).resolve()
        if cand.is_file():
            return cand
    return None


def _structure_headers() -> set[Path]:
    """The per-structure headers are included from ds/registry.h after its enum of
    structure ids, which they use: they are compiled through the registry."""
    reg = INCLUDE / "ds" / "registry.h"
    names = QUOTED.findall(reg.read_text())
    return {p for n in names if (p := _resolve(reg, n)) is not None and p.name != "ds_api.h"}


def test_headers_found() -> None:
    names = {_rel(h) for h in HEADERS}
    assert {"include/evq.h", "include/root.h", "include/arena/alloc.h",
            "include/ds/registry.h"} <= names


@pytest.mark.parametrize("header", HEADERS, ids=_rel)
def test_quoted_includes_stay_in_include(header: Path) -> None:
    text = header.read_text()
    outside = []
    for name in QUOTED.findall(text):
        found = _resolve(header, name)
        if found is None or not found.is_relative_to(INCLUDE.resolve()):
            outside.append(name)
    assert outside == [], f"{_rel(header)} includes {outside}: not under include/"
    # a system include must not name one of the project's own files
    project = {p.name for d in ("bpf", "pipeline") for p in (ROOT / d).rglob("*.h")}
    assert [n for n in ANGLED.findall(text) if Path(n).name in project] == []


def _compile(cmd: list[str], src: str, tmp: Path) -> None:
    c = tmp / "tu.c"
    c.write_text(src)
    res = subprocess.run([*cmd, str(c)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


STANDALONE = [h for h in HEADERS if h not in _structure_headers()]


@pytest.mark.parametrize("header", STANDALONE, ids=_rel)
def test_header_compiles_as_userspace_c(header: Path, tmp_path: Path) -> None:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed (make setup installs it)")
    _compile([gcc, "-fsyntax-only", "-std=gnu11", "-Wall", "-Wextra", "-Werror",
              f"-I{INCLUDE}"], f'#include "{header.relative_to(INCLUDE)}"\n', tmp_path)


@pytest.mark.parametrize("header", STANDALONE, ids=_rel)
def test_header_compiles_as_bpf(header: Path, tmp_path: Path) -> None:
    clang = shutil.which("clang-19")
    if clang is None or not (ROOT / "build" / "vmlinux.h").is_file():
        pytest.skip("clang-19 or build/vmlinux.h missing: run `make setup` first")
    # build/ holds only generated files (vmlinux.h, skeletons), never a project header
    _compile([clang, "-fsyntax-only", "-target", "bpf", "-mcpu=v3", "-D__TARGET_ARCH_x86",
              "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter",
              f"-I{ROOT / 'build'}", f"-I{INCLUDE}"],
             BPF_PRELUDE + f'#include "{header.relative_to(INCLUDE)}"\n', tmp_path)


def test_no_weak_definitions_in_headers() -> None:
    """What must exist once per process is defined in src/ (compiled once into each
    userspace build), not as a weak definition in every translation unit."""
    weak = [_rel(h) for h in HEADERS if re.search(r"__attribute__\s*\(\(\s*weak", h.read_text())]
    assert weak == []


def test_library_sources_define_the_userspace_state() -> None:
    text = (ROOT / "src" / "arena_user.c").read_text()
    for name in ("arena_thread_slot;", "arena_default_heap;",
                 "int arena_heap_attach_thread(", "void arena_heap_detach_thread("):
        assert name in text, name
