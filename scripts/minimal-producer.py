#!/usr/bin/env python3
"""What the least producer costs a file creation: the pipeline's producers cut down by
scripts/minimal-producer.patch to what any tracer of file creations does (filter on the pid
or comm, read the clock and the ids, copy the created name, publish the record into the
queue: no path, no process fields, no path filters), measured the way the real ones are.

    sudo .venv/bin/python scripts/minimal-producer.py [--kernel NAME]... [--no-vm] [--no-bench]

The committed tree (HEAD; uncommitted changes are not in it) is checked out into a temporary
git worktree, the patch applied there, and the BPF objects, the extension and the load built
there with this checkout's toolchain and virtualenv. Then, in that worktree:
- scripts/vm-cost.py (instructions per creation in the test VMs, tracepoints and BPF LSM;
  --kernel as there), printed as its table;
- `python -m pipeline bench --only overhead` (timed on this machine), whose report.md is
  printed.
The worktree is removed afterwards. The patch is a measurement, never a build of the
product: the records it publishes have no path. tests/test_minimal_producer.py checks that
it still applies to the tree and that what it gives builds.

Exit status: 0, 1 when a build or a measurement failed, 2 on bad input."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.errors import ConfigError  # noqa: E402
from pipeline.flags import Parser  # noqa: E402

PATCH = ROOT / "scripts" / "minimal-producer.patch"
# make's set-up stamps, relative to a checkout: the worktree shares this checkout's
# virtualenv and system packages, so its build must not redo the set-up (which would
# reinstall the packages)
STAMPS = ("build/.system-ready", ".venv/.ready")


def _args(argv: list[str]) -> argparse.Namespace:
    ap = Parser(prog="scripts/minimal-producer.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernel", action="append", default=None,
                    help="passed to scripts/vm-cost.py (default: every test VM kernel)")
    ap.add_argument("--no-vm", action="store_true", help="leave out scripts/vm-cost.py")
    ap.add_argument("--no-bench", action="store_true", help="leave out the overhead bench")
    return ap.parse_args(argv)


def _run(cmd: list[str], cwd: Path) -> int:
    print(f"minimal-producer: {' '.join(cmd)}", file=sys.stderr, flush=True)
    return subprocess.run(cmd, cwd=cwd, check=False).returncode


def _prepare(tree: Path) -> bool:
    """The worktree, patched and built; False (said why) when a step failed."""
    if _run(["git", "worktree", "add", "--detach", str(tree), "HEAD"], ROOT) != 0:
        return False
    if _run(["git", "apply", str(PATCH)], tree) != 0:
        print("minimal-producer: the patch no longer applies to HEAD: bring it up to date "
              "with the producers", file=sys.stderr)
        return False
    (tree / ".venv").symlink_to(ROOT / ".venv")
    (tree / "build").mkdir()
    (tree / "build" / "vm").symlink_to(ROOT / "build" / "vm")
    shutil.copy2(ROOT / "build" / "vmlinux.h", tree / "build" / "vmlinux.h")
    keep = [a for s in STAMPS for a in ("-o", str(tree / s))]
    return _run(["make", "-s", *keep, "bpf", "ext", str(tree / "build" / "createload")],
                tree) == 0


def main(argv: list[str]) -> int:
    try:
        args = _args(argv)
    except ConfigError as e:
        print(f"minimal-producer: {e}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("minimal-producer: run as root (sudo): the VMs and the bench need it",
              file=sys.stderr)
        return 2
    missing = [p for p in (ROOT / ".venv" / "bin" / "python", ROOT / "build" / "vmlinux.h",
                           *(ROOT / s for s in STAMPS)) if not p.exists()]
    if missing:
        print(f"minimal-producer: {missing[0]} is missing: run `sudo make setup` first",
              file=sys.stderr)
        return 2
    py = str(ROOT / ".venv" / "bin" / "python")
    work = Path(tempfile.mkdtemp(prefix="arena-pipeline-minimal-"))
    tree = work / "tree"
    failed = False
    try:
        if not _prepare(tree):
            return 1
        if not args.no_vm:
            kernels = [a for k in args.kernel or [] for a in ("--kernel", k)]
            failed |= _run([py, "scripts/vm-cost.py", *kernels], tree) != 0
        if not args.no_bench:
            out = work / "bench"
            failed |= _run([py, "-m", "pipeline", "bench", "--only", "overhead",
                            "--output", str(out)], tree) != 0
            report = out / "report.md"
            if report.is_file():
                print(report.read_text())
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT,
                       capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
