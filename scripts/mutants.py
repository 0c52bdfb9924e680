#!/usr/bin/env python3
"""Mutation testing: plant each mutation of a list in a copy of the tree, one at a
time, rebuild, run the tests named for it, and report which are caught.

    .venv/bin/python scripts/mutants.py                 every mutant (make mutants)
    .venv/bin/python scripts/mutants.py --fast          the CI subset (make mutants-fast)
    .venv/bin/python scripts/mutants.py --only a,b      some, by name
    .venv/bin/python scripts/mutants.py --check         only check that every anchor is there

The list (tests/mutants.toml) names, for each mutant, a file, a snippet that
must occur exactly once in it, its replacement, and the pytest arguments that
must fail once it is planted. A snippet that is missing or occurs twice is an
error, never a pass: the code moved and the mutant must be rewritten. See the
list's header for every key.

The copy: every file git knows about (tracked, or new and not ignored) from the
working tree, with its modification time, plus build/ and the built extension,
so that make rebuilds only what a mutant touches; .venv is a link to the
checkout's. Mutants run one after another (the tests load BPF programs and use
every CPU). Exit status: 0 when every mutant not marked equivalent is caught,
1 when one is missed, 2 on bad input (the list, an anchor, tests that fail
without any mutant).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LIST = ROOT / "tests" / "mutants.toml"
MUTANT_KEYS = {"name", "file", "original", "replacement", "tests", "build", "timeout", "fast",
               "equivalent", "proof", "why"}
PROOFS = {"bpf-objects"}


class ToolError(Exception):
    """Bad input: the list, an anchor, a build or tests broken without any mutant."""


@dataclass
class Mutant:
    name: str
    file: str
    original: str
    replacement: str
    tests: list[str]
    build: list[str]
    timeout: float
    fast: bool = False
    equivalent: str = ""
    proof: str = ""
    why: str = ""


@dataclass
class Result:
    mutant: Mutant
    status: str  # caught, missed, equivalent
    by: str
    seconds: float
    detail: str = ""


@dataclass
class Outcome:
    """One run of a test set: pytest's exit code and what failed."""
    rc: int
    failed: list[str] = field(default_factory=list)
    ran: int = 0
    skipped: int = 0
    timed_out: bool = False
    output: str = ""


def load_list(path: Path) -> list[Mutant]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ToolError(f"{path}: {e}") from None
    groups: dict[str, list[str]] = data.get("groups", {})
    defaults: dict[str, Any] = data.get("defaults", {})
    out: list[Mutant] = []
    seen: set[str] = set()
    for i, raw in enumerate(data.get("mutant", [])):
        where = f"{path.name}: mutant #{i + 1} ({raw.get('name', '?')})"
        unknown = set(raw) - MUTANT_KEYS
        if unknown:
            raise ToolError(f"{where}: unknown key(s) {sorted(unknown)}; "
                            f"known: {sorted(MUTANT_KEYS)}")
        for key in ("name", "file", "original", "replacement"):
            if not isinstance(raw.get(key), str) or (not raw[key] and key != "replacement"):
                raise ToolError(f"{where}: '{key}' must be a non-empty string")
        if raw["name"] in seen:
            raise ToolError(f"{where}: the name is used twice")
        seen.add(raw["name"])
        if raw["original"] == raw["replacement"]:
            raise ToolError(f"{where}: replacement equals the original")
        tests: list[str] = []
        for t in raw.get("tests", []):
            if t.startswith("@"):
                if t[1:] not in groups:
                    raise ToolError(f"{where}: no group {t[1:]!r} in [groups]")
                tests.extend(groups[t[1:]])
            else:
                tests.append(t)
        proof = raw.get("proof", "")
        if proof and proof not in PROOFS:
            raise ToolError(f"{where}: proof must be one of {sorted(PROOFS)}")
        if proof and not raw.get("equivalent"):
            raise ToolError(f"{where}: a proof is for a mutant marked equivalent")
        if not tests and not raw.get("equivalent"):
            raise ToolError(f"{where}: 'tests' is empty (name the tests that must catch it)")
        out.append(Mutant(
            name=raw["name"], file=raw["file"], original=raw["original"],
            replacement=raw["replacement"], tests=tests,
            build=list(raw.get("build", defaults.get("build", ["bpf", "ext"]))),
            timeout=float(raw.get("timeout", defaults.get("timeout", 600))),
            fast=bool(raw.get("fast", False)), equivalent=str(raw.get("equivalent", "")),
            proof=proof, why=str(raw.get("why", ""))))
    if not out:
        raise ToolError(f"{path}: no [[mutant]] entries")
    return out


def check_anchor(tree: Path, m: Mutant) -> str:
    """The file's text; the snippet must occur exactly once."""
    path = tree / m.file
    try:
        text = path.read_text()
    except OSError as e:
        raise ToolError(f"mutant {m.name}: cannot read {m.file}: {e.strerror}") from None
    n = text.count(m.original)
    if n != 1:
        raise ToolError(f"mutant {m.name}: its snippet occurs {n} times in {m.file} (must be "
                        "exactly once): rewrite the mutant for the code as it is now")
    return text


# ---- the copy of the tree ----


# What a tree without git (an unpacked archive, as CI runs it) holds besides its sources:
# environments, build products (copied on their own below) and caches.
NOT_SOURCES = {".git", ".venv", "build", "__pycache__", ".pytest_cache", ".mypy_cache",
               ".ruff_cache", ".hypothesis"}


def tree_files(root: Path) -> list[str]:
    """The tree's source files: git's view (tracked, and new files it does not ignore) in a
    checkout, else every file outside NOT_SOURCES that is not a built extension."""
    res = subprocess.run(["git", "-C", str(root), "rev-parse", "--is-inside-work-tree"],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        out: list[str] = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames
                           if d not in NOT_SOURCES and not d.endswith(".egg-info")]
            rel = Path(dirpath).relative_to(root)
            out += [str(rel / f) for f in filenames if not f.endswith(".so")]
        return out
    res = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others",
                          "--exclude-standard"], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise ToolError(f"git ls-files failed in {root}: {res.stderr.strip()}")
    return [f for f in res.stdout.split("\0") if f]


def make_copy(root: Path, dest: Path) -> None:
    for rel in tree_files(root):
        src = root / rel
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the working tree
        dst = dest / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst, follow_symlinks=False)
    # build products with their times, so make and the tests' own mtime checks
    # rebuild only what a mutant makes stale
    if (root / "build").is_dir():
        shutil.copytree(root / "build", dest / "build", symlinks=True, dirs_exist_ok=True)
    # the three extension modules: pipeline/_core, pipeline/_ds, pipeline/bench/_native
    for so in (root / "pipeline").rglob("*.so"):
        shutil.copy2(so, dest / so.relative_to(root))
    if not (root / ".venv").is_dir():
        raise ToolError(f"{root / '.venv'} is missing: run `make setup` first")
    (dest / ".venv").symlink_to(root / ".venv")


# ---- running things ----


def run_group(cmd: list[str], cwd: Path, timeout: float, env: dict[str, str] | None = None,
              ) -> tuple[int, str, bool]:
    """Run cmd in its own process group; on timeout the whole group is killed."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, env=env)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out, False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return -1, out, True
    except BaseException:
        # interrupted (^C, SIGTERM): the group must not outlive the tool
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise


def build(tree: Path, targets: list[str], timeout: float) -> tuple[bool, str]:
    if not targets:
        return True, ""
    rc, out, timed_out = run_group(["make", "-s", *targets], tree, timeout)
    return rc == 0 and not timed_out, out


def expand(tree: Path, args: list[str]) -> list[str]:
    """Globs in test paths (tests/test_ds_*.py) are expanded in the copy, so new
    test files are picked up without editing the list."""
    out: list[str] = []
    for a in args:
        if any(ch in a for ch in "*?[") and not a.startswith("-") and "::" not in a:
            hits = sorted(str(Path(p).relative_to(tree)) for p in glob.glob(str(tree / a)))
            if not hits:
                raise ToolError(f"no test file matches {a!r}")
            out.extend(hits)
        else:
            out.append(a)
    return out


def run_pytest(tree: Path, args: list[str], timeout: float, xml: Path, first: bool) -> Outcome:
    xml.unlink(missing_ok=True)
    cmd = [str(tree / ".venv" / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
           f"--junitxml={xml}", *(["-x"] if first else []), *expand(tree, args)]
    rc, out, timed_out = run_group(cmd, tree, timeout)
    o = Outcome(rc=rc, timed_out=timed_out, output=out)
    if xml.exists():
        for case in ET.parse(xml).getroot().iter("testcase"):
            o.ran += 1
            node = f"{case.get('classname', '')}::{case.get('name', '')}"
            if case.find("failure") is not None or case.find("error") is not None:
                o.failed.append(node.removeprefix("tests."))
            elif case.find("skipped") is not None:
                o.skipped += 1
    return o


# The C tests' own build (compiler, flags, configurations) is the one in
# tests/test_ds_c.py: the tool asks it for the binary instead of repeating it.
C_BUILD = ("import sys; sys.path.insert(0, 'tests'); import test_ds_c; "
           "print(test_ds_c._build(sys.argv[1], sys.argv[2]))")
# what tests/test_ds_c.py allows one run of a C test
C_RUN_TIMEOUT = 120.0
C_ENV = {"TSAN_OPTIONS": "halt_on_error=1", "UBSAN_OPTIONS": "halt_on_error=1"}
SANITIZER_REPORTS = ("WARNING: ThreadSanitizer", "ERROR: AddressSanitizer", "runtime error:")


def run_c(tree: Path, spec: str, timeout: float) -> Outcome:
    """spec "test_ds.tsan msqueue 4": tests/c/test_ds.c built as the tsan
    configuration of tests/test_ds_c.py, run with the arguments. It fails on a
    non-zero exit or a sanitizer report."""
    exe_spec, *args = spec.split()
    name, _, config = exe_spec.partition(".")
    if not config:
        raise ToolError(f"c test {spec!r}: name it as NAME.CONFIG (test_ds.tsan)")
    py = str(tree / ".venv" / "bin" / "python")
    rc, out, timed_out = run_group([py, "-c", C_BUILD, name, config], tree, timeout)
    if timed_out or rc != 0:
        if "AssertionError" not in out:
            raise ToolError(f"c test {spec!r}: cannot build it through tests/test_ds_c.py:\n"
                            f"{out[-3000:]}")
        return Outcome(rc=3, failed=[f"compiler ({exe_spec})"], ran=1, output=out)
    exe = out.strip().splitlines()[-1]
    rc, out, timed_out = run_group([exe, *args], tree, min(timeout, C_RUN_TIMEOUT),
                                   env={**os.environ, **C_ENV})
    bad = rc != 0 or any(s in out for s in SANITIZER_REPORTS)
    return Outcome(rc=1 if bad else 0, failed=[spec] if bad or timed_out else [], ran=1,
                   timed_out=timed_out, output=out)


def segments(tests: list[str]) -> list[tuple[str, list[str]]]:
    """In the list's order, each entry a run of its own: pytest orders the arguments of one
    run by file, so a quick test named first would wait behind a whole group, and the list
    puts first the test that catches its mutant soonest."""
    out: list[tuple[str, list[str]]] = []
    i = 0
    while i < len(tests):
        t = tests[i]
        if t.startswith("c:"):
            out.append(("c", [t[2:].strip()]))
        elif t.startswith("-") and out and out[-1][0] == "pytest":
            # an option (a group's "-k EXPR") belongs to the run of the path before it
            takes_value = t in ("-k", "-m") and i + 1 < len(tests)
            out[-1][1].extend(tests[i:i + 1 + takes_value])
            i += takes_value
        else:
            out.append(("pytest", [t]))
        i += 1
    return out


def run_tests(tree: Path, tests: list[str], timeout: float, xml: Path,
              first: bool = True) -> Outcome:
    """The C tests (c:...) and the pytest runs in the list's order; with
    first, stop at the first that fails."""
    total = Outcome(rc=0)
    for kind, args in segments(tests):
        if kind == "c":
            o = run_c(tree, args[0], timeout)
        else:
            o = run_pytest(tree, args, timeout, xml, first)
            if o.rc not in (0, 1) and not o.timed_out:
                return o  # pytest itself failed: the caller reports it
        total.ran += o.ran
        total.skipped += o.skipped
        total.failed += o.failed
        total.output += o.output
        if o.timed_out:
            total.timed_out = True
        if o.failed or o.timed_out:
            total.rc = 1
            if first:
                break
    return total


def bpf_disassembly(tree: Path) -> dict[str, str]:
    objdump = shutil.which("llvm-objdump-19") or shutil.which("llvm-objdump")
    if objdump is None:
        raise ToolError("llvm-objdump-19 is needed for proof = 'bpf-objects' "
                        "(make setup installs llvm-19)")
    out: dict[str, str] = {}
    for obj in sorted((tree / "build").glob("*.bpf.o")):
        # instructions with their bytes and relocations; the same path in
        # both builds, so the header line compares equal too
        res = subprocess.run([objdump, "-d", "-r", str(obj)], capture_output=True, text=True,
                             check=False)
        if res.returncode != 0:
            raise ToolError(f"{objdump} -d {obj}: {res.stderr.strip()}")
        out[obj.name] = res.stdout
    return out


# ---- one mutant ----


def run_mutant(tree: Path, m: Mutant, xml: Path, bpf_ref: dict[str, str] | None,
               run_equivalent: bool, first: bool) -> Result:
    start = time.monotonic()
    path = tree / m.file
    text = check_anchor(tree, m)

    def done(status: str, by: str, detail: str = "") -> Result:
        return Result(m, status, by, time.monotonic() - start, detail)

    path.write_text(text.replace(m.original, m.replacement, 1))
    try:
        targets = sorted(set(m.build) | ({"bpf"} if m.proof == "bpf-objects" else set()))
        ok, out = build(tree, targets, m.timeout)
        if not ok:
            return done("caught", f"compiler (make {' '.join(targets)})", out[-2000:])
        if m.proof == "bpf-objects":
            assert bpf_ref is not None
            now = bpf_disassembly(tree)
            differ = [k for k in now if now[k] != bpf_ref.get(k)]
            if differ:
                return done("missed", "not equivalent: its BPF code differs in " +
                            ", ".join(differ))
            if not run_equivalent:
                return done("equivalent", "BPF objects identical")
        elif m.equivalent and not run_equivalent:
            return done("equivalent", "not run (marked equivalent)")
        o = run_tests(tree, m.tests, m.timeout, xml, first)
        if o.timed_out:
            return done("caught", f"timeout ({', '.join(o.failed) or 'pytest run'})",
                        o.output[-2000:])
        if o.failed and o.failed[0].startswith("compiler ("):
            return done("caught", o.failed[0], o.output[-2000:])
        if o.rc == 1 and o.failed:
            return done("caught", ", ".join(o.failed[:3]), o.output[-2000:])
        if o.rc == 0:
            if m.equivalent:
                return done("equivalent", "tests pass")
            return done("missed", f"{o.ran - o.skipped} tests passed, {o.skipped} skipped")
        # a crash of pytest itself, or a collection/usage error: not a verdict
        return done("error", f"pytest exited {o.rc}, not a test failure", o.output[-3000:])
    except ToolError as e:
        return done("error", str(e).splitlines()[0], str(e))
    finally:
        path.write_text(text)


def baseline(tree: Path, mutants: list[Mutant], xml: Path) -> None:
    """Every test set must pass on the unmutated copy, else nothing it says counts."""
    targets = sorted({t for m in mutants for t in m.build} | {"bpf", "ext"})
    ok, out = build(tree, targets, 900)
    if not ok:
        raise ToolError(f"the unmutated tree does not build:\n{out[-3000:]}")
    # each C test and each pytest argument list once, however many mutants share it
    steps: dict[tuple[str, ...], None] = {}
    for m in mutants:
        if m.equivalent:
            continue
        for kind, seg in segments(m.tests):
            steps[tuple(f"c:{a}" for a in seg) if kind == "c" else tuple(seg)] = None
    for step in steps:
        args = list(step)
        t0 = time.monotonic()
        o = run_tests(tree, args, 900, xml, first=False)
        if o.rc != 0 or o.timed_out or o.failed:
            # once more: a test that fails only sometimes must be named, and
            # it makes every verdict of its mutants doubtful
            again = run_tests(tree, args, 900, xml, first=False)
            if again.rc == 0 and not again.failed and not again.timed_out:
                print(f"baseline  FLAKY: {', '.join(o.failed) or ' '.join(args)} failed once "
                      "and then passed", flush=True)
                o = again
        print(f"baseline  {' '.join(args)}: {o.ran} tests, {o.skipped} skipped "
              f"({time.monotonic() - t0:.0f} s)", flush=True)
        if o.rc != 0 or o.timed_out or o.failed:
            raise ToolError(f"the tests fail without any mutant ({' '.join(args)}):\n"
                            f"{o.output[-3000:]}")
        if o.ran == o.skipped:
            raise ToolError(f"every test of {' '.join(args)} skipped: nothing could catch a "
                            "mutant (run as root after make setup)")


def report(results: list[Result]) -> int:
    w = max(len(r.mutant.name) for r in results)
    print()
    print(f"{'mutant':<{w}} | {'result':<10} | {'s':>5} | by what")
    print(f"{'-' * w}-+-{'-' * 10}-+-{'-' * 5}-+-{'-' * 20}")
    for r in results:
        print(f"{r.mutant.name:<{w}} | {r.status:<10} | {r.seconds:5.0f} | {r.by}")
    caught = sum(r.status == "caught" for r in results)
    equiv = sum(r.status == "equivalent" for r in results)
    missed = [r for r in results if r.status == "missed"]
    by_compiler = sum(r.status == "caught" and r.by.startswith("compiler") for r in results)
    total = len(results) - equiv
    errors = sum(r.status == "error" for r in results)
    print(f"\nscore: {caught}/{total - errors} caught ({by_compiler} by the compiler), "
          f"{len(missed)} missed, {equiv} equivalent" + (f", {errors} errors" if errors else ""))
    for r in missed:
        print(f"missed: {r.mutant.name}: {r.mutant.why or r.mutant.file}")
    failed = [r for r in results if r.status == "error"]
    for r in failed:
        print(f"error: {r.mutant.name}: {r.by}\n{r.detail}", file=sys.stderr)
    return 2 if failed else 1 if missed else 0


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)  # so the copy and the test processes go too
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--list", type=Path, default=DEFAULT_LIST, help="the mutation list (TOML)")
    ap.add_argument("--fast", action="store_true", help="only the mutants marked fast = true")
    ap.add_argument("--only", default="", help="comma-separated mutant names")
    ap.add_argument("--check", action="store_true",
                    help="check the list and every anchor in this tree, run nothing")
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip running the test sets once without any mutant")
    ap.add_argument("--run-equivalent", action="store_true",
                    help="run the tests of mutants marked equivalent too")
    ap.add_argument("--every-test", action="store_true",
                    help="run all of a mutant's tests, not only up to the first that catches it")
    ap.add_argument("--keep", action="store_true", help="keep the copy of the tree (path printed)")
    ap.add_argument("--json", type=Path, help="also write the results to this file")
    a = ap.parse_args(argv)
    try:
        mutants = load_list(a.list)
        for m in mutants:
            check_anchor(ROOT, m)
        if a.fast:
            mutants = [m for m in mutants if m.fast]
        if a.only:
            names = [n for n in a.only.split(",") if n]
            unknown = sorted(set(names) - {m.name for m in mutants})
            if unknown:
                raise ToolError(f"--only: no mutant named {', '.join(unknown)}")
            mutants = [m for m in mutants if m.name in names]
        if a.check:
            print(f"{len(mutants)} mutants, every anchor found exactly once")
            return 0
        return run_all(mutants, a)
    except ToolError as e:
        print(f"mutants: {e}", file=sys.stderr)
        return 2


def run_all(mutants: list[Mutant], a: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="arena-mutants-"))
    tree = tmp / "tree"
    xml = tmp / "junit.xml"
    t0 = time.monotonic()
    try:
        make_copy(ROOT, tree)
        print(f"copy of the tree in {tree} ({time.monotonic() - t0:.0f} s); "
              f"{len(mutants)} mutants", flush=True)
        if not a.no_baseline:
            baseline(tree, mutants, xml)
        bpf_ref = None
        if any(m.proof == "bpf-objects" for m in mutants):
            ok, out = build(tree, ["bpf"], 900)
            if not ok:
                raise ToolError(f"make bpf fails without any mutant:\n{out[-3000:]}")
            bpf_ref = bpf_disassembly(tree)
        results: list[Result] = []
        for m in mutants:
            r = run_mutant(tree, m, xml, bpf_ref, a.run_equivalent, not a.every_test)
            results.append(r)
            print(f"{m.name}: {r.status} ({r.by}) {r.seconds:.0f} s", flush=True)
        rc = report(results)
        print(f"total {time.monotonic() - t0:.0f} s")
        if a.json:
            a.json.write_text(json.dumps([
                {"name": r.mutant.name, "file": r.mutant.file, "status": r.status, "by": r.by,
                 "seconds": round(r.seconds, 1), "equivalent": r.mutant.equivalent,
                 "why": r.mutant.why} for r in results], indent=1) + "\n")
        return rc
    finally:
        if a.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
