"""The arena data-structure framework (include/arena, include/ds, bpf/ds_*.bpf.c).

The C tests in tests/c are built here with gcc -Wall -Wextra -Werror in three
configurations - plain -O2, -fsanitize=address,undefined and -fsanitize=thread
(the last two for the pure-userspace tests, over an anonymous mapping in place
of the arena) - and run; every registered structure is also driven op by op
against a Python model. The kernel cases load build/ds_ops.skel.h and
build/ds_nosleep.skel.h (built with `make bpf`) and need root.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import sysconfig
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline import ds
from pipeline.ds import Flag, Op, Result

ROOT = Path(__file__).resolve().parent.parent
CDIR = ROOT / "tests" / "c"
OUT = ROOT / "build" / "tests"
INCLUDES = [f"-I{ROOT / 'include'}", f"-I{CDIR}"]
# the arena library's userspace part that is not inline: every C build links it
LIB_SRCS = sorted((ROOT / "src").glob("*.c"))
WARN = ["-Wall", "-Wextra", "-Werror"]
# The sanitizers keep their shadow memory around 1 << 44, where the arena map
# lives; the userspace-only tests move their arena (arena.h: ARENA_BASE).
SAN_BASE = "-DARENA_BASE=0x7e9000000000ULL"
CONFIGS: dict[str, list[str]] = {
    "plain": ["-O2", "-g"],
    "asan": ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", SAN_BASE],
    "tsan": ["-O1", "-g", "-fsanitize=thread", SAN_BASE],
}
USER_TESTS = ["test_alloc", "test_epoch", "test_ds", "test_faults", "test_reclaim", "test_roles",
              "test_trim"]
# sanitized runs are slower: fewer operations (second argument of test_ds)
SCALE = {"plain": "1", "asan": "2", "tsan": "4"}

def _registered() -> list[str]:
    """The names on the DS_REGISTRY lines, so that a new line is tested without edits here."""
    text = (ROOT / "include" / "ds" / "registry.h").read_text()
    block = text[text.index("#define DS_REGISTRY(X)"):].split("\n\n", 1)[0]
    return re.findall(r"X\(\s*\d+\s*,\s*(\w+)\s*\)", block)


REGISTERED = _registered()

MASK64 = (1 << 64) - 1


def _gcc() -> str:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed (make setup installs it)")
    return gcc


def _build(name: str, config: str, extra: list[str] | None = None) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    exe = OUT / f"{name}.{config}"
    src = CDIR / f"{name}.c"
    deps = [src, *CDIR.glob("*.h"), *(ROOT / "include").rglob("*.h"), *LIB_SRCS]
    if exe.exists() and all(d.stat().st_mtime < exe.stat().st_mtime for d in deps):
        return exe
    cmd = [_gcc(), *CONFIGS[config], *WARN, *INCLUDES, *(extra or []), str(src),
           *map(str, LIB_SRCS), "-o", str(exe), "-lpthread"]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stderr}"
    return exe


@pytest.fixture(scope="session")
def binaries() -> dict[tuple[str, str], Path]:
    """Every userspace test in every configuration, built in parallel."""
    jobs = [(name, cfg) for cfg in CONFIGS for name in USER_TESTS]
    jobs.append(("ds_driver", "plain"))
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        built = list(pool.map(lambda j: _build(*j), jobs))
    return dict(zip(jobs, built, strict=True))


def _text(b: bytes | str | None) -> str:
    return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")


def _run(cmd: list[str], timeout: float = 120, env: dict[str, str] | None = None) -> str:
    """Run a C test; its output (what a stalled consumer says is missing) goes into any failure."""
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                             env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{cmd} still running after {timeout} s\n{_text(e.stdout)}\n{_text(e.stderr)}")
    assert res.returncode == 0, f"{cmd} exited {res.returncode}\n{res.stdout}\n{res.stderr}"
    assert "WARNING: ThreadSanitizer" not in res.stderr, res.stderr
    return res.stdout


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("name", USER_TESTS)
def test_userspace(binaries: dict[tuple[str, str], Path], name: str, config: str) -> None:
    exe = binaries[(name, config)]
    args = ["all", SCALE[config]] if name == "test_ds" else []
    out = _run([str(exe), *args],
               env={"TSAN_OPTIONS": "halt_on_error=1", "UBSAN_OPTIONS": "halt_on_error=1"})
    assert f"{name}: ok" in out


def test_contended_tsan(binaries: dict[tuple[str, str], Path]) -> None:
    """`test_ds contended` under ThreadSanitizer (about 10 s here). Every queue that takes
    several producers, with more producers than CPUs and spinning consumers: a producer is
    often preempted between linking its node and swinging the tail, another thread swings it,
    and a consumer reads the node ordered only by the link (a weaker link is a reported race).
    Every keyed structure with epoch reclamation, with 8 threads inserting, deleting and
    searching the same 4 keys: the skiplist's insert meets the delete of its own node (it
    retires the node; a node freed there races the searches standing on it)."""
    out = _run([str(binaries[("test_ds", "tsan")]), "contended", "all", "1"],
               env={"TSAN_OPTIONS": "halt_on_error=1"})
    assert "test_ds: ok" in out
    metas = _registry(binaries)
    queues = {m.name for m in metas if not m.flags & Flag.KEYED and m.model != ds.Model.SPSC}
    keyed = {m.name for m in metas if m.flags & Flag.KEYED and m.flags & Flag.RECLAIM}
    lines = out.splitlines()
    assert {ln.split()[0] for ln in lines if " ok: 6 rounds of 8 producers" in ln} == queues, out
    assert {ln.split()[0] for ln in lines if " ok: 8 threads, " in ln} == keyed, out
    assert "msqueue" in queues and "skiplist" in keyed


# ---- the registry and the Python models ----


@dataclass(frozen=True)
class Meta:
    id: int
    name: str
    flags: int
    model: int
    ops: int
    node_size: int
    head_size: int
    description: str
    progress: str


def _registry(binaries: dict[tuple[str, str], Path]) -> list[Meta]:
    out = _run([str(binaries[("ds_driver", "plain")]), "--list"])
    return [Meta(**json.loads(line)) for line in out.splitlines()]


def test_registry(binaries: dict[tuple[str, str], Path]) -> None:
    metas = {m.name: m for m in _registry(binaries)}
    assert set(metas) == set(REGISTERED)
    assert set(metas) >= {"list", "msqueue", "hash", "skiplist", "mpmc", "mpsc", "spsc", "stack"}
    for m in metas.values():
        assert m.description and m.progress and m.node_size > 0 and m.head_size > 0
        assert m.ops & (1 << Op.INSERT) and m.ops & (1 << Op.VERIFY), \
            f"{m.name}: insert and verify are mandatory"
    assert metas["hash"].flags & Flag.KEYED and not metas["hash"].flags & Flag.ORDERED
    assert metas["skiplist"].flags & Flag.ORDERED
    assert metas["mpmc"].flags & Flag.BOUNDED
    assert metas["spsc"].model == ds.Model.SPSC and metas["mpsc"].model == ds.Model.MPSC


class Model:
    """What a structure must answer, op by op, single-threaded."""

    def __init__(self, meta: Meta, capacity: int) -> None:
        self.meta = meta
        self.keyed = bool(meta.flags & Flag.KEYED)
        self.ordered = bool(meta.flags & Flag.ORDERED)
        self.lifo = bool(meta.flags & Flag.LIFO)
        # neither keyed nor FIFO nor LIFO: pop may return any element
        self.unordered = not self.keyed and not meta.flags & (Flag.FIFO | Flag.LIFO)
        self.capacity = capacity if meta.flags & Flag.BOUNDED else None
        self.map: dict[int, int] = {}
        self.seq: deque[tuple[int, int]] = deque()

    def insert(self, k: int, v: int) -> tuple[int, ...]:
        if self.keyed:
            if k in self.map:
                return (Result.EXISTS,)
            self.map[k] = v
            return (Result.OK,)
        if self.capacity is not None and len(self.seq) >= self.capacity:
            return (Result.FULL,)
        self.seq.append((k, v))
        return (Result.OK,)

    def delete(self, k: int) -> tuple[int, ...]:
        if not self.keyed:
            return (Result.INVALID, 0)
        if k not in self.map:
            return (Result.NOT_FOUND, 0)
        return (Result.OK, self.map.pop(k))

    def search(self, k: int) -> tuple[int, ...]:
        if not self.keyed:
            return (Result.INVALID, 0)
        return (Result.OK, self.map[k]) if k in self.map else (Result.NOT_FOUND, 0)

    def pop(self) -> tuple[int, ...]:
        if self.keyed:
            if not self.ordered:
                return (Result.INVALID, 0, 0)
            if not self.map:
                return (Result.NOT_FOUND, 0, 0)
            k = min(self.map)
            return (Result.OK, k, self.map.pop(k))
        if not self.seq:
            return (Result.NOT_FOUND, 0, 0)
        k, v = self.seq.pop() if self.lifo else self.seq.popleft()
        return (Result.OK, k, v)

    def items(self) -> list[tuple[int, int]]:
        if self.keyed:
            return sorted(self.map.items())
        return list(reversed(self.seq)) if self.lifo else list(self.seq)

    def verify(self) -> tuple[int, ...]:
        items = self.items()
        return (Result.OK, len(items), sum(k for k, _ in items) & MASK64,
                sum(v for _, v in items) & MASK64)

    def iterate(self, lo: int, hi: int) -> list[tuple[int, int]]:
        return [(k, v) for k, v in self.items() if lo <= k < hi]


def _script(meta: Meta, rng: random.Random, n: int, keyspace: int) -> Iterator[str]:
    for _ in range(n):
        r = rng.random()
        k = rng.randrange(keyspace)
        if r < 0.40:
            yield f"i {k} {rng.randrange(1 << 63)}"
        elif r < 0.55:
            yield f"d {k}"
        elif r < 0.70:
            yield f"s {k}"
        elif r < 0.92:
            yield "p"
        elif r < 0.97:
            lo = rng.randrange(keyspace)
            yield f"r {lo} {lo + rng.randrange(1, keyspace)}"
        else:
            yield "v"


@pytest.mark.parametrize("name", REGISTERED)
def test_against_python_model(binaries: dict[tuple[str, str], Path], name: str) -> None:
    metas = {m.name: m for m in _registry(binaries)}
    meta = metas[name]
    capacity = 16
    for seed, keyspace in ((1, 24), (2, 400)):
        rng = random.Random(seed)
        lines = list(_script(meta, rng, 3000, keyspace))
        out = _drive(binaries, name, capacity, lines)
        model = Model(meta, capacity)
        assert len(out) == len(lines)
        for i, (line, got) in enumerate(zip(lines, out, strict=True)):
            parts = line.split()
            vals = [int(x) for x in got.split()]
            if parts[0] == "i":
                want: tuple[int, ...] = model.insert(int(parts[1]), int(parts[2]))
            elif parts[0] == "d":
                want = model.delete(int(parts[1]))
            elif parts[0] == "s":
                want = model.search(int(parts[1]))
            elif parts[0] == "p" and model.unordered:
                # any element may come out: it must be one that is in
                if not model.seq:
                    want = (Result.NOT_FOUND, 0, 0)
                else:
                    assert vals[0] == Result.OK and (vals[1], vals[2]) in model.seq, (i, line, got)
                    model.seq.remove((vals[1], vals[2]))
                    want = tuple(vals)
            elif parts[0] == "p":
                want = model.pop()
            elif parts[0] == "v":
                want = model.verify()
            else:
                items = model.iterate(int(parts[1]), int(parts[2]))
                got_items = list(zip(vals[2::2], vals[3::2], strict=True))
                assert vals[0] == Result.OK and vals[1] == len(items), (i, line, got)
                if not meta.flags & (Flag.ORDERED | Flag.FIFO | Flag.LIFO):
                    # a hash iterates in bucket order, an unordered bag in its own
                    got_items.sort()
                    items.sort()
                assert got_items == items, (i, line)
                continue
            assert tuple(vals) == want, f"{name} step {i}: {line!r} -> {got!r}, model {want}"


def _drive(binaries: dict[tuple[str, str], Path], name: str, capacity: int,
           lines: list[str]) -> list[str]:
    res = subprocess.run([str(binaries[("ds_driver", "plain")]), name, str(capacity)],
                         input="\n".join(lines) + "\n", capture_output=True, text=True,
                         timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    return res.stdout.splitlines()


# ---- BPF: the headers compile for BPF, and the kernel cases ----


def _make_bpf() -> None:
    if shutil.which("make") is None or shutil.which("clang-19") is None:
        pytest.skip("make/clang-19 missing: run `make setup` first")
    res = subprocess.run(["make", "-C", str(ROOT), "bpf"], capture_output=True, text=True,
                         check=False, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "warning" not in (res.stdout + res.stderr).lower(), res.stdout + res.stderr


@pytest.fixture(scope="session")
def bpf_built() -> None:
    _make_bpf()


def test_bpf_objects_have_no_arena_memcpy(bpf_built: None) -> None:
    """clang turns copy and zeroing loops into memcpy/memset, which the BPF
    backend cannot lower for address space 1: none may be left in the IR."""
    for src in ("ds_ops", "ds_nosleep"):
        res = subprocess.run(
            ["clang-19", "-O2", "-target", "bpf", "-mcpu=v3", "-D__TARGET_ARCH_x86",
             f"-I{ROOT / 'build'}", f"-I{ROOT / 'include'}", f"-I{ROOT / 'bpf'}", "-S",
             "-emit-llvm", "-o", "-", str(ROOT / "bpf" / f"{src}.bpf.c")],
            capture_output=True, text=True, check=False)
        assert res.returncode == 0, res.stderr
        bad = [ln for ln in res.stdout.splitlines()
               if "@llvm.mem" in ln and ".p1" in ln and "declare" not in ln]
        assert not bad, bad[:3]


@pytest.fixture(scope="session")
def kernel_test(bpf_built: None) -> Path:
    if os.geteuid() != 0:
        pytest.skip("kernel cases load BPF programs: run as root")
    if not Path("/sys/fs/bpf").is_dir():
        pytest.skip("bpffs is not available")
    OUT.mkdir(parents=True, exist_ok=True)
    exe = OUT / "test_kernel.plain"
    src = CDIR / "test_kernel.c"
    deps = [src, *CDIR.glob("*.h"), *(ROOT / "include").rglob("*.h"), *LIB_SRCS,
            ROOT / "build" / "ds_ops.skel.h", ROOT / "build" / "ds_nosleep.skel.h"]
    if not exe.exists() or any(d.stat().st_mtime >= exe.stat().st_mtime for d in deps):
        cmd = [_gcc(), *CONFIGS["plain"], *WARN, *INCLUDES, f"-I{ROOT / 'build'}", str(src),
               *map(str, LIB_SRCS), "-o", str(exe), "-lbpf", "-lelf", "-lz", "-lpthread"]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        assert res.returncode == 0, res.stderr
    return exe


def test_kernel_and_user_together(kernel_test: Path) -> None:
    out = _run([str(kernel_test), "all", "1"], timeout=120)
    assert "test_kernel: ok" in out
    for name in REGISTERED:
        assert any(ln.split()[:2] == [name, "ok"] for ln in out.splitlines()), name
    totals = [ln for ln in out.splitlines() if ln.startswith("kernel totals")]
    assert totals and int(totals[0].split()[2]) > 100000
    # a process killed in its critical section, expired by kernel batches; pages given back
    assert any(ln.startswith("dead participant: 10000 retired") for ln in out.splitlines()), out
    assert any(ln.startswith("trim: batches gave back") for ln in out.splitlines()), out


def test_kernel_roles(kernel_test: Path) -> None:
    """Kernel batches claim the roles of spsc, mpsc and evq once per batch:
    beside a live holder their pops are refused one by one and the rest
    runs; a kernel batch's hold refuses a user consumer for its whole
    length; the roles are free after it."""
    out = _run([str(kernel_test), "roles", "1"], timeout=120)
    assert "test_kernel: ok" in out
    for name in ("spsc", "mpsc", "evq"):
        assert any(ln.split() == [name, "ok", "(roles)"] for ln in out.splitlines()), out


def test_bench_runs(binaries: dict[tuple[str, str], Path], bpf_built: None,
                    kernel_test: Path) -> None:
    """The side-by-side benchmark (pipeline/bench/_native/dsbench.c, `python -m pipeline bench
    --only ds`) runs every row, small, in a child process; its accounting is exact. No time is
    asserted."""
    code = ("import json; from pipeline.bench.ds import run_ds; "
            "print(json.dumps(run_ds(keys=16384, items=50000, rounds=1, samples=100, "
            "with_evq=False)))")
    res = json.loads(_run([sys.executable, "-c", code], timeout=120,
                          env={"PYTHONPATH": str(ROOT)}))
    h = res["hash"]
    assert h["exact"], h["fails"]
    for op in ("insert", "search", "delete"):
        for way in ("arena_user", "arena_user_2threads", "map_syscall", "map_batch",
                    "kernel_arena", "kernel_map"):
            assert h["ns_per_op"][way][op] > 0, (way, op)
    queues = res["queues"]["structures"]
    # every registered structure with queue or stack semantics, side by side
    want = {m.name for m in _registry(binaries)
            if not m.flags & Flag.KEYED and m.flags & (Flag.FIFO | Flag.LIFO)}
    assert set(queues) == want and want >= {"msqueue", "mpmc", "mpsc", "spsc", "stack"}
    for name, q in queues.items():
        assert q["exact"], (name, q)
        assert q["popped"] == q["pushed"] == 50100, (name, q)


# ---- the C extension under AddressSanitizer ----

ASAN_DIR = ROOT / "build" / "asan"
# Every test of test_ds_py.py but those where another process or kernel batches
# allocate from the heap: they allocate in pages whose shadow this process
# poisoned (ASan's shadow is per process) and would read as use-after-poison
# (include/ds/README.md, "How reclamation is tested, and the sanitizers").
# test_ds_list_json runs the plain package in a child process.
ASAN_PY_TESTS = "not test_pool_and_kernel_exact and not test_ds_list_json"


def _newer(out: Path, deps: list[Path]) -> bool:
    return out.exists() and all(d.stat().st_mtime < out.stat().st_mtime for d in deps)


def _build_asan_extension() -> Path:
    """pipeline._ds (the data-structure module: its sources and the shared ones it is built
    from, as in setup.py) with -fsanitize=address into build/asan/pkg, over BPF objects built for
    the moved arena base (1 << 44 lies in ASan's shadow on x86-64). Returns the package root."""
    clang, bpftool = shutil.which("clang-19"), shutil.which("bpftool")
    if clang is None or bpftool is None:
        pytest.skip("clang-19/bpftool missing: run `make setup` first")
    ASAN_DIR.mkdir(parents=True, exist_ok=True)
    headers = [*(ROOT / "include").rglob("*.h"), *(ROOT / "bpf").glob("*.h")]
    for src in sorted((ROOT / "bpf").glob("*.bpf.c")):
        name = src.name.removesuffix(".bpf.c")
        obj, skel = ASAN_DIR / f"{name}.bpf.o", ASAN_DIR / f"{name}.skel.h"
        if _newer(skel, [src, *headers]):
            continue
        res = subprocess.run(
            [clang, "-g", "-O2", "-target", "bpf", "-mcpu=v3", "-D__TARGET_ARCH_x86", *WARN,
             "-Wno-unused-parameter", SAN_BASE, f"-I{ROOT / 'build'}", *INCLUDES[:1],
             f"-I{ROOT / 'bpf'}", "-c", str(src), "-o", str(obj)],
            capture_output=True, text=True, check=False)
        assert res.returncode == 0, res.stderr
        gen = subprocess.run([bpftool, "gen", "skeleton", str(obj), "name", f"{name}_bpf"],
                             capture_output=True, text=True, check=False)
        assert gen.returncode == 0, gen.stderr
        skel.write_text(gen.stdout)
    pkg = ASAN_DIR / "pkg"
    so = pkg / "pipeline" / f"_ds{sysconfig.get_config_var('EXT_SUFFIX')}"
    own, shared = ROOT / "pipeline" / "_ds", ROOT / "pipeline" / "_cshared"
    csrc = sorted([*own.glob("*.[ch]"), shared / "coreutil.c", shared / "coreutil.h",
                   shared / "dsops.c", shared / "dsops.h"]) + LIB_SRCS
    if not _newer(so, [*csrc, *headers, *ASAN_DIR.glob("*.skel.h")]):
        so.parent.mkdir(parents=True, exist_ok=True)
        flags = ["-O0", "-g", "-fsanitize=address", SAN_BASE, "-fPIC", *WARN,
                 "-Wno-missing-field-initializers", "-std=gnu11", "-fno-strict-aliasing",
                 f"-I{ASAN_DIR}", *INCLUDES[:1], f"-I{own}", f"-I{shared}",
                 f"-I{sysconfig.get_paths()['include']}"]

        def compile_one(c: Path) -> str:
            cmd = [_gcc(), *flags, "-c", str(c), "-o", str(ASAN_DIR / f"{c.stem}.o")]
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            return "" if res.returncode == 0 else f"{' '.join(cmd)}\n{res.stderr}"

        sources = [c for c in csrc if c.suffix == ".c"]
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            errors = [e for e in pool.map(compile_one, sources) if e]
        assert not errors, errors[0]
        link = [_gcc(), "-shared", "-fsanitize=address",
                *(str(ASAN_DIR / f"{c.stem}.o") for c in sources), "-o", str(so), "-lbpf",
                "-lelf", "-lz"]
        res = subprocess.run(link, capture_output=True, text=True, check=False)
        assert res.returncode == 0, f"{' '.join(link)}\n{res.stderr}"
    # the package's Python files beside the ASan extension (copies: the import
    # must not find the plain extension in the source tree)
    for py in (ROOT / "pipeline").rglob("*.py"):
        dst = pkg / "pipeline" / py.relative_to(ROOT / "pipeline")
        if not _newer(dst, [py]):
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(py, dst)
    return pkg


def test_python_ds_under_asan(bpf_built: None) -> None:
    """A subset of tests/test_ds_py.py with the C extension built with ASan (LD_PRELOAD of
    the runtime): a write past a node or a read of a freed one in the extension's arena
    code is a report, and the run fails."""
    if os.geteuid() != 0:
        pytest.skip("the arena is a BPF map: run as root")
    libasan = subprocess.run([_gcc(), "-print-file-name=libasan.so"], capture_output=True,
                             text=True, check=False).stdout.strip()
    if not libasan or not Path(libasan).is_absolute() or not Path(libasan).exists():
        pytest.skip("libasan.so is not installed (gcc's AddressSanitizer runtime)")
    pkg = _build_asan_extension()
    # reports go to files: the inner pytest captures stderr, and an aborting process loses it
    logs = ASAN_DIR / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir()
    env = {**os.environ, "LD_PRELOAD": libasan, "PYTHONDONTWRITEBYTECODE": "1",
           "ASAN_OPTIONS": f"detect_leaks=0:log_path={logs / 'asan'}"}
    env.pop("PYTHONPATH", None)
    # run from the package root, so that `import pipeline` finds the ASan build first
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", ASAN_PY_TESTS,
         str(ROOT / "tests" / "test_ds_py.py")],
        cwd=pkg, env=env, capture_output=True, text=True, timeout=300, check=False)
    reports = "".join(f.read_text(errors="replace") for f in sorted(logs.glob("asan*")))
    out = res.stdout + res.stderr
    assert not reports, reports[:8000]
    assert res.returncode == 0, out[-8000:]
    passed = re.search(r"\b(\d+) passed\b", out)
    assert passed and int(passed.group(1)) >= 10 and " failed" not in out, out[-3000:]
    # the ASan build was the one imported
    check = subprocess.run([sys.executable, "-c", "import pipeline._ds as c; print(c.__file__)"],
                           cwd=pkg, env=env, capture_output=True, text=True, check=False)
    assert check.stdout.strip().startswith(str(pkg)), check.stdout + check.stderr
