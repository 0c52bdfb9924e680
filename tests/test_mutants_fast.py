"""Mutation testing (scripts/mutants.py, tests/mutants.toml): every anchor of the
list is still in the code, the tool fails loudly on a stale list and reports a
missed mutant, and the CI subset of three mutants is caught by today's tests."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

from conftest import ROOT, needs_root

TOOL = ROOT / "scripts" / "mutants.py"
LIST = ROOT / "tests" / "mutants.toml"


def _tool(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(TOOL), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_every_anchor_is_in_place() -> None:
    res = _tool("--check")
    n = len(tomllib.loads(LIST.read_text())["mutant"])
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"{n} mutants, every anchor found exactly once"


def test_stale_anchor_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[mutant]]\nname = "gone"\nfile = "include/evq.h"\n'
                   "original = 'no such text in the file'\nreplacement = 'x'\n"
                   'tests = ["tests/test_format.py"]\n')
    res = _tool("--list", str(bad), "--check")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "mutants: mutant gone: its snippet occurs 0 times in include/evq.h (must be exactly "
        "once): rewrite the mutant for the code as it is now"]


def test_missed_mutant_fails_the_run(tmp_path: Path) -> None:
    """A mutant no test can see (a README word; the test run only checks the
    anchors) is reported missed, and the run exits 1."""
    lst = tmp_path / "missed.toml"
    lst.write_text('[[mutant]]\nname = "readme-word"\nfile = "README.md"\n'
                   'original = "# arena-pipeline\\n"\nreplacement = "# arena-pipe1ine\\n"\n'
                   'tests = ["tests/test_mutants_fast.py::test_every_anchor_is_in_place"]\n'
                   "build = []\nwhy = 'documentation only'\n")
    out = tmp_path / "r.json"
    res = _tool("--list", str(lst), "--no-baseline", "--json", str(out), timeout=120)
    assert res.returncode == 1, res.stdout + res.stderr
    got = json.loads(out.read_text())
    assert [(r["name"], r["status"]) for r in got] == [("readme-word", "missed")]
    assert "score: 0/1 caught (0 by the compiler), 1 missed, 0 equivalent" in res.stdout
    assert "missed: readme-word: documentation only" in res.stdout


@needs_root
def test_fast_subset_is_caught(tmp_path: Path) -> None:
    fast = [m["name"] for m in tomllib.loads(LIST.read_text())["mutant"] if m.get("fast")]
    assert len(fast) == 3
    out = tmp_path / "fast.json"
    # no baseline: this suite runs the same tests unmutated, and fails if they do
    res = _tool("--fast", "--no-baseline", "--json", str(out), timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    got = json.loads(out.read_text())
    assert [r["name"] for r in got] == fast
    assert all(r["status"] == "caught" and r["by"] != "compiler" for r in got), got
