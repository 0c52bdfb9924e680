"""scripts/vm-cost.py, for real: Debian's 6.18 kernel booted under QEMU with one CPU and
instruction counting, the overhead benchmark's load run in it with nothing attached, with
the pipeline on the syscall tracepoints and on BPF LSM (the producer this machine's kernel
cannot attach), and with the floor of each. Instruction counts do not depend on what else this
machine does, so the checks below are orderings that hold on any run, and the pipeline's
exact accounting: every creation captured, on both producers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

import pytest
from helpers import vm

from pipeline.bench.part_overhead import VM_COST_FLOORS

SCRIPT = vm.ROOT / "scripts" / "vm-cost.py"
KERNEL = "6.18"


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "boots a VM with virtiofsd sharing /: needs root"
    k = vm.kernels().get(KERNEL)
    if k is None or not k.available:
        return f"kernel {KERNEL} missing: run `make vm`"
    for obj in VM_COST_FLOORS.values():
        if not obj.exists():
            return f"build/{obj.name} missing: run `make bpf`"
    return None


@pytest.fixture(scope="module")
def cost() -> dict[str, Any]:
    why = _why_not()
    if why is not None:
        pytest.skip(why)
    r = subprocess.run([sys.executable, str(SCRIPT), "--kernel", KERNEL, "--files", "400",
                        "--rounds", "2", "--json"], cwd=vm.ROOT, capture_output=True,
                       text=True, timeout=3600, check=False)
    assert r.returncode == 0, r.stderr[-4000:]
    return dict(json.loads(r.stdout)[KERNEL])


def test_every_contender_ran_and_the_pipeline_captured_every_creation(
        cost: dict[str, Any]) -> None:
    raw, s = cost["raw"], cost["summary"]
    # two rounds per block, and a block with nothing attached around each of the others
    assert {w: len(raw["per_creation"][w]) for w in s} == {
        "none": 10, "floor": 2, "tracepoint": 2, "floor_lsm": 2, "lsm": 2}
    for who in ("tracepoint", "lsm"):
        # each round: 400 timed creations, then 1000 while the kernel counts
        assert s[who]["captured"] == [2 * 1400, 2 * 1400], who


def test_the_counts_order_as_the_work_does(cost: dict[str, Any]) -> None:
    s = cost["summary"]
    # openat + close on tmpfs is thousands of instructions, not a timing artefact
    assert 3000 < s["none"]["instructions"] < 100_000
    # nothing attached spreads little: no other work is counted
    assert s["none"]["max"] < 1.1 * s["none"]["min"]
    # an empty program on the tracepoints costs something (the traced path of every
    # syscall); the LSM floor's 130-180 are within the spread of the rounds with nothing
    # attached (a few hundred), so only its counted programs are checked
    assert s["floor"]["added"] > 50
    for floor, who in (("floor", "tracepoint"), ("floor_lsm", "lsm")):
        assert s[floor]["bpf_per_event"] > 0, floor
        # the pipeline's work on the same hooks: far above the spread
        assert s[who]["added"] > s[floor]["added"] + 200, who
        # the counted programs: more than an empty one's
        assert s[who]["bpf_per_event"] > s[floor]["bpf_per_event"], who


def test_bad_input_is_one_line_and_exit_2() -> None:
    cases = [(["--files", "0"], "--files"), (["--rounds", "x"], "--rounds")]
    if _why_not() is None:  # the kernels are looked at as root, once the flags parse
        cases.append((["--kernel", "5.4"], "no kernel '5.4'"))
    for args, words in cases:
        r = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=vm.ROOT,
                           capture_output=True, text=True, timeout=60, check=False)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and "Traceback" not in r.stderr, args


def test_the_lsm_floor_hooks_what_the_lsm_producer_hooks() -> None:
    """The floor must stand for the producer's hooks: the same hooks, each sleepable or not
    as the producer's is (the two kinds' trampolines enter and leave differently)."""
    def sections(name: str) -> list[str]:
        text = (vm.ROOT / "bpf" / name).read_text()
        return sorted(re.findall(r'SEC\("(lsm(?:\.s)?/\w+)"\)', text))

    producer = sections("lsm.bpf.c")
    assert len(producer) == 3, producer
    assert sections("bench_floor_lsm.bpf.c") == producer
