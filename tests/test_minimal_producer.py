"""scripts/minimal-producer.py's experiment stays runnable: its patch applies to the
producers as they are, and the producers it gives build with the project's own BPF flags
(the whole measurement boots VMs and times a bench: the README gives its command and
figures). And its bad input is one line and exit 2."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "minimal-producer.py"
PATCH = ROOT / "scripts" / "minimal-producer.patch"
OBJS = ("producer.bpf.o", "lsm.bpf.o")


def test_the_patch_applies_and_its_producers_build(tmp_path: Path) -> None:
    vmlinux = ROOT / "build" / "vmlinux.h"
    if not vmlinux.is_file():
        pytest.skip("build/vmlinux.h missing: run `make bpf`")
    for d in ("bpf", "include"):
        shutil.copytree(ROOT / d, tmp_path / d)
    (tmp_path / "build").mkdir()
    shutil.copy2(vmlinux, tmp_path / "build" / "vmlinux.h")
    r = subprocess.run(["git", "apply", str(PATCH)], cwd=tmp_path, capture_output=True,
                       text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "bpf" / "producer.bpf.c").read_text() != (
        ROOT / "bpf" / "producer.bpf.c").read_text()
    # the project's Makefile and flags, run over the patched copy; its set-up stamp is
    # declared old so that nothing but the objects is made
    targets = [str(tmp_path / "build" / o) for o in OBJS]
    r = subprocess.run(["make", "-s", "-C", str(tmp_path), "-f", str(ROOT / "Makefile"),
                        "-o", str(tmp_path / "build" / ".system-ready"), *targets],
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    for t in targets:
        assert Path(t).stat().st_size > 0, t


@pytest.mark.parametrize("args, words", [(["--kernel"], "--kernel"),
                                         (["--rounds", "3"], "unrecognized")])
def test_bad_input_is_one_line_and_exit_2(args: list[str], words: str) -> None:
    r = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in r.stderr, lines
