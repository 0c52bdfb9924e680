#!/usr/bin/env python3
"""Instructions per operation of each race contender, counted by callgrind.

Wall-clock figures on a shared machine move with its load; instruction
counts do not. Each contender's single-thread run is counted twice under
callgrind, with --ops N1 and --ops N2 operations; the difference divided by
N2 - N1 is what one more iteration costs (a push+pop pair for the queues,
an insert+search+delete for the keyed structures), set-up and checks of the
end state cancelling out. The loop's own bookkeeping and exactness checks
are in the figure for every contender alike.

Usage: bench/race/opcount.py [--race build/race] [--only spsc,mpmc,...]
Needs valgrind and root (the arena is a BPF map).
"""
import argparse
import collections
import functools
import glob
import os
import re
import subprocess
import sys
import tempfile

N1, N2 = 100_000, 600_000


@functools.cache
def atomic_addrs(obj: str) -> frozenset[int]:
    """Addresses of the atomic read-modify-write instructions in an object."""
    r = subprocess.run(["objdump", "-d", "--no-show-raw-insn", obj], capture_output=True, text=True)
    out = set()
    for line in r.stdout.splitlines():
        m = re.match(r"^\s+([0-9a-f]+):\s+(.*)$", line)
        if not m:
            continue
        ins = m.group(2)
        if ins.startswith("lock ") or (ins.startswith("xchg") and "(" in ins):
            out.add(int(m.group(1), 16))
    return frozenset(out)


def parse(path: str) -> tuple[int, int]:
    """(instructions, atomic instructions) executed in one callgrind profile."""
    objs: dict[str, str] = {}
    per: collections.Counter[tuple[str, int]] = collections.Counter()
    ob, addr, skip = "", 0, False
    with open(path) as f:
        for line in f:
            if line.startswith(("ob=", "cob=")):
                # a name is given once, at the first mention of its number
                m = re.match(r"c?ob=\((\d+)\)(?: (.*))?", line.strip())
                if m and m.group(2):
                    objs[m.group(1)] = m.group(2)
                if m and line.startswith("ob="):
                    ob = objs.get(m.group(1), "")
                continue
            if line.startswith("calls="):
                skip = True
                continue
            m = re.match(r"^(0x[0-9a-f]+|[+-]\d+|\*)\s+\S+\s+(\d+)", line)
            if not m:
                continue
            a = m.group(1)
            if a.startswith("0x"):
                addr = int(a, 16)
            elif a[0] in "+-":
                addr += int(a)
            if skip:
                skip = False
                continue
            per[(ob, addr)] += int(m.group(2))
    total = sum(per.values())
    atomics = 0
    for (o, a), n in per.items():
        if o and os.path.exists(o) and a in atomic_addrs(o):
            atomics += n
    return total, atomics


def counts(race: str, only: str, ops: int) -> list[tuple[int, int]]:
    """(Ir, atomics) of each child (one per contender row, in row order) of one race run."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.%p")
        cmd = ["valgrind", "--tool=callgrind", "--dump-instr=yes", f"--callgrind-out-file={out}",
               race, "--only", only, "--workload", "st", "--ops", str(ops), "--rounds", "1"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            sys.exit(f"opcount: {' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
        files = sorted(glob.glob(os.path.join(tmp, "cg.*")), key=lambda p: int(p.rsplit(".", 1)[1]))
        return [parse(path) for path in files[1:]]  # the first is the parent


def rows(race: str, only: str) -> list[str]:
    """Row labels, in the order the first round runs them."""
    r = subprocess.run([race, "--only", only, "--workload", "st", "--ops", "1000", "--rounds", "1"],
                       capture_output=True, text=True, check=True)
    out = []
    for line in r.stdout.splitlines():
        m = re.match(r"^(\S+)\s+1 thread\s+(.+?)\s+(arena|plain|heap)\s", line)
        if m:
            out.append(f"{m.group(1)} {m.group(2).strip()} ({m.group(3)})")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--race", default="build/race")
    ap.add_argument("--only", default="spsc,mpmc,msqueue,mpsc,stack,hash,skiplist")
    a = ap.parse_args()
    for s in a.only.split(","):
        labels = rows(a.race, s)
        lo, hi = counts(a.race, s, N1), counts(a.race, s, N2)
        for label, x, y in zip(labels, lo, hi, strict=True):
            print(f"{label:40s} {(y[0] - x[0]) / (N2 - N1):8.1f} instructions, "
                  f"{(y[1] - x[1]) / (N2 - N1):5.2f} atomic RMWs per iteration")


if __name__ == "__main__":
    main()
