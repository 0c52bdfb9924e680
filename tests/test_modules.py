"""The C extension is three modules, one per product (setup.py): the runtime
(pipeline._core), the data-structure library (pipeline._ds) and the native benchmarks
(pipeline.bench._native). The runtime carries no benchmark code, and each module imports on
its own, without loading the others. Read from the built .so files with nm and from fresh
interpreters; nothing here needs root."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EXTENSIONS, ROOT, _built_extension

NATIVE_DIR = ROOT / "pipeline" / "bench" / "_native"
BENCH_SOURCES = [NATIVE_DIR / "dsbench.c", NATIVE_DIR / "transport.c"]
DS_SOURCES = [ROOT / "pipeline" / "_ds" / "ds.c"]
# a function defined at file scope without `static`: its name is an exported symbol
DEFINITION = re.compile(r"^(?!static\b)[A-Za-z_][\w \t\*]*?\b([A-Za-z_]\w*)\(", re.M)


def _exported_by(sources: list[Path]) -> set[str]:
    names: set[str] = set()
    for src in sources:
        text = src.read_text()
        for m in DEFINITION.finditer(text):
            # a definition, not a prototype: the line after its parameters opens a body
            rest = text[m.end():]
            close = rest.find(")")
            if close >= 0 and rest[close + 1:].lstrip().startswith("{"):
                names.add(m.group(1))
    return names


def _symbols(module: str) -> set[str]:
    so = _built_extension(module)
    assert so is not None, f"{module} is not built"
    out = subprocess.run(["nm", "-D", "--defined-only", str(so)], capture_output=True,
                         text=True, check=True).stdout
    return {ln.split()[-1] for ln in out.splitlines() if ln.strip()}


def test_bench_symbols_are_found_where_they_belong() -> None:
    """The symbols the benchmark sources define are in the benchmark module: the check
    below reads real symbols, and the list of names it looks for is not empty."""
    bench = _exported_by(BENCH_SOURCES)
    assert {"ap_dsb_hash", "ap_dsb_queues", "ap_bench_arena", "ap_bench_ringbuf"} <= bench
    native = _symbols("pipeline.bench._native")
    assert bench <= native, sorted(bench - native)
    assert "PyInit__native" in native


def test_runtime_module_holds_no_benchmark_or_ds_code() -> None:
    core = _symbols("pipeline._core")
    assert "PyInit__core" in core and "ap_session_open" in core
    bench = _exported_by(BENCH_SOURCES)
    assert not bench & core, sorted(bench & core)
    assert not {s for s in core if s.startswith(("ap_dsb", "ap_bench_", "ap_dsbench"))}
    ds = _exported_by(DS_SOURCES)
    assert "ap_ds_add_to_module" in ds
    assert not ds & core, sorted(ds & core)
    # the session loads the ds_ops programs into its own arena (one arena for the
    # queue and the structures): the loader is here, the Python library is not
    assert "ap_ds_ops_load_shared" in core


def test_ds_module_holds_no_benchmark_code() -> None:
    ds = _symbols("pipeline._ds")
    assert "PyInit__ds" in ds and "ap_ds_ops_load" in ds
    bench = _exported_by(BENCH_SOURCES)
    assert not bench & ds, sorted(bench & ds)


@pytest.mark.parametrize("module", list(EXTENSIONS))
def test_each_module_imports_on_its_own(module: str) -> None:
    """A fresh interpreter imports one module; none of the others is loaded with it, and
    its CoreError is the one class every module raises."""
    code = ("import sys, importlib; m = importlib.import_module(sys.argv[1]); "
            "from pipeline._coreerror import CoreError; "
            "print(m.CoreError is CoreError); "
            "print(' '.join(sorted(n for n in sys.argv[2:] if n in sys.modules)))")
    res = subprocess.run([sys.executable, "-c", code, module, *EXTENSIONS], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    same, loaded = res.stdout.splitlines()
    assert same == "True"
    assert loaded == module
