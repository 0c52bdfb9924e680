"""The benchmark's C load programs: built on first use and again when their shared header
changes, and strict about their numbers (a sign or a space is refused, exit 2)."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from pipeline.bench import tools


def test_a_newer_shared_header_rebuilds_both_programs() -> None:
    header = tools.HERE / tools.SHARED_HEADER
    now = time.time()
    for name in tools.PROGRAMS:
        os.utime(tools.HERE / f"{name}.c", (now - 200, now - 200))
        os.utime(tools.program(name), (now - 100, now - 100))
    os.utime(header, (now - 50, now - 50))  # newer than the programs, older than a rebuild
    for name in tools.PROGRAMS:
        assert tools.program(name).stat().st_mtime > now - 50, name


@pytest.mark.parametrize("value", ["-1", " 5", "+5", "5x", "", "99999999999999999999999"])
def test_loadgen_refuses_a_count_that_is_not_a_plain_number(value: str) -> None:
    res = subprocess.run([str(tools.program("loadgen")), "--calls", value],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 2
    assert res.stderr.splitlines()[0] == "loadgen: --calls needs a non-negative integer"
    assert res.stdout == ""


def test_loadgen_makes_exactly_the_calls_asked() -> None:
    res = subprocess.run([str(tools.program("loadgen")), "--calls", "1234"],
                         capture_output=True, text=True, check=True)
    assert res.stdout.startswith('{"calls": 1234, ')
