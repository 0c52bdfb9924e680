"""overhead: what a file-creation tracer costs the program it traces.

build/createload creates (openat O_CREAT|O_EXCL) and closes files on tmpfs in a tight loop on
CPU 0. Each round times it once per contender, one after the other:
  - none:     nothing attached;
  - floor:    an empty BPF program on each tracepoint the pipeline's fallback uses
              (bpf/bench_floor.bpf.o): what any tracer of these tracepoints pays before it
              does any work (the traced syscall path, the tracepoint's record, the dispatch);
  - pipeline: `python -m pipeline --sink jsonl`, filtered on the load's pid, on CPU 1;
  - pipeline_kernel: the same, with the pipeline stopped (SIGSTOP) while the load runs and
              a queue that holds every event: what the kernel side alone costs (its programs,
              the tracepoints, the traced syscall path), with no reader running;
  - bpftrace: a bpftrace script printing the same events as JSON lines from the same
              syscall tracepoints (bpftrace_script.py), filtered alike, on CPU 1.
The load reports its wall-clock time and its own CPU time: other processes that run on its
CPU meanwhile lengthen the first only, so on a busy machine the second is the tracer's cost
without the neighbours'. The same process then runs a second, shorter loop (a tenth of the
first, at least 1,000 creations) while the kernel counts the run time of every BPF program
each tracer holds (bpfstats), giving the in-kernel ns per captured event; counting costs each
program run two clock reads, so the first loop, the one timed, runs without it. The tracer's
own CPU time over both loops is read from /proc; each tracer's output is counted against the
files created by both.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import bpfstats
from .bpftrace_script import PROBES, script
from .figures import PartResult, Question, Skipped, Target, ratios
from .parts import Context, Plot
from .tools import BUILD, ROOT, ToolError, bpf_lsm_missing, bpftool, bpftrace_missing, program

TITLE = "overhead on the traced workload: file creations with no tracer, the pipeline, bpftrace"
LOAD_CPU, TRACER_CPU = "0", "1"
PIN_DIR = "/sys/fs/bpf/arena-pipeline-bench"
CONTENDERS = ("none", "floor", "pipeline", "pipeline_kernel", "bpftrace")
BPFFS = "/sys/fs/bpf"
FLOOR_OBJ = BUILD / "bench_floor.bpf.o"
# the LSM producer's floor, for scripts/vm-cost.py (this machine cannot attach it)
FLOOR_LSM_OBJ = BUILD / "bench_floor_lsm.bpf.o"
# scripts/vm-cost.py's contenders that are empty programs, and their objects
VM_COST_FLOORS = {"floor": FLOOR_OBJ, "floor_lsm": FLOOR_LSM_OBJ}
# the targets the issue sets: the pipeline adds at most 5% to each creation, and at most a
# tenth of what bpftrace adds
TARGET_OVERHEAD_PCT = 5.0
TARGET_VS_BPFTRACE = 0.1
ATTACH_TIMEOUT = 60.0
STOP_RETRY_S, STOP_TRIES = 3.0, 20


def _tmpfs_root() -> Path:
    """A tmpfs directory to create the files under: /dev/shm where it is tmpfs."""
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 2 and parts[1] == "/dev/shm" and parts[2] == "tmpfs":
                return Path("/dev/shm")
    raise RuntimeError("/dev/shm is not a tmpfs mount here: the overhead part creates its "
                       "files on tmpfs; mount one there (mount -t tmpfs tmpfs /dev/shm)")


class CreateLoad:
    """createload's two loops in one process: `files` creations timed with nothing else
    going on, then `then_files` more while the kernel counts the tracer's BPF run time."""

    def __init__(self, scratch: Path, files: int, then_files: int, where: Path) -> None:
        """scratch: a directory of the caller's for the start files; where: the tmpfs
        directory to create the files under."""
        self.dir = Path(tempfile.mkdtemp(prefix="ap-overhead-", dir=where))
        stamp = time.monotonic_ns()
        self.start = scratch / f"overhead-go-{stamp}"
        self.then = scratch / f"overhead-then-{stamp}"
        self.proc = subprocess.Popen(
            [str(program("createload")), "--dir", str(self.dir), "--files", str(files),
             "--cpu", LOAD_CPU, "--start-file", str(self.start), "--then-files",
             str(then_files), "--then-start-file", str(self.then)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def go(self) -> dict[str, Any]:
        """Runs the first loop; returns its line."""
        assert self.proc.stdout is not None
        self.start.touch()
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=60)
            raise RuntimeError(f"createload failed: {self._err()}")
        return dict(json.loads(line))

    def go_then(self) -> dict[str, Any]:
        """Runs the second loop; returns its line once the process has ended."""
        self.then.touch()
        out, err = self.proc.communicate(timeout=600)
        if self.proc.returncode != 0:
            raise RuntimeError(f"createload failed: {err.strip()}")
        return dict(json.loads(out))

    def _err(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read().strip()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.start.unlink(missing_ok=True)
        self.then.unlink(missing_ok=True)
        for p in self.dir.iterdir():
            p.unlink()
        self.dir.rmdir()


class Floor:
    """A floor object's empty programs (bench_floor.bpf.o by default), attached by bpftool:
    `autoattach` pins one link per program into a directory of their own, and removing the
    pins detaches them. The directory is made here under a fresh name: /sys/fs/bpf may be
    writable by everyone (sticky), and a name someone else could have taken first is not
    used."""

    def __init__(self, obj: Path = FLOOR_OBJ) -> None:
        if not obj.is_file():
            raise ToolError(f"bench: {obj} is missing: run `make bpf` as root")
        self.obj = obj
        self.dir = Path(tempfile.mkdtemp(prefix="arena-pipeline-floor-", dir=BPFFS))
        try:
            self.ids = self._attach()
        except BaseException:
            self.close()
            raise

    def _attach(self) -> set[int]:
        res = subprocess.run([bpftool(), "prog", "loadall", str(self.obj), str(self.dir),
                              "autoattach"], capture_output=True, text=True, check=False)
        if res.returncode != 0:
            why = (res.stderr.strip().splitlines() or ["no message"])[-1]
            raise RuntimeError(f"the floor's programs did not attach: {why}")
        ids: set[int] = set()
        for name in os.listdir(self.dir):
            # bpftool 7.5 exits 255 after printing a pinned link correctly: its output
            # decides
            show = subprocess.run([bpftool(), "-j", "link", "show", "pinned",
                                   str(self.dir / name)], capture_output=True, text=True,
                                  check=False)
            try:
                ids.add(int(json.loads(show.stdout)["prog_id"]))
            except (ValueError, KeyError, TypeError):
                raise RuntimeError(f"bpftool does not show the floor's link {name}: "
                                   f"{(show.stdout + show.stderr).strip()[-200:]}") from None
        return ids

    def close(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            for name in os.listdir(fd):
                if not stat.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                    os.unlink(name, dir_fd=fd)
        finally:
            os.close(fd)
        self.dir.rmdir()


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.startswith(b"{"))
    except FileNotFoundError:
        return 0


def _stop(p: subprocess.Popen[str]) -> str:
    """SIGINT, repeated every STOP_RETRY_S: bpftrace 0.17 here sometimes lets the first one
    pass and stays in its poll loop, and exits (its output flushed) on the next."""
    for _ in range(STOP_TRIES):
        p.send_signal(signal.SIGINT)
        try:
            _, err = p.communicate(timeout=STOP_RETRY_S)
            return err or ""
        except subprocess.TimeoutExpired:
            continue
    p.kill()
    _, err = p.communicate()
    return err or ""


def then_files_for(files: int) -> int:
    """Creations of the second loop, the one the kernel's statistics count."""
    return max(1000, files // 10)


def _queue_for(files: int) -> list[str]:
    """Flags for a queue that holds every event of a round (the reader stopped), and an
    arena with room for it."""
    cap = 1 << max(16, (files - 1).bit_length())
    slot_pages = cap * 1024 // 4096  # a slot is under 1 KiB
    return ["--queue-capacity", str(cap), "--arena-pages", str(max(32768, slot_pages + 8192))]


def _start_pipeline(out: Path, pid: int, extra: list[str]) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        ["taskset", "-c", TRACER_CPU, sys.executable, "-m", "pipeline", "--sink", "jsonl",
         "--output", str(out), "--filter-pid", str(pid), "--pin-dir", PIN_DIR, *extra],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert p.stderr is not None
    seen: list[str] = []
    for line in p.stderr:
        seen.append(line)
        if "ready in" in line:
            return p
    p.wait()
    raise RuntimeError("the pipeline did not start: " + "".join(seen).strip()[-300:])


def _perf_attached(pid: int) -> int:
    res = subprocess.run([bpftool(), "-j", "perf", "show"], capture_output=True, text=True,
                         check=False)
    if res.returncode != 0:
        return 0
    return sum(1 for x in json.loads(res.stdout or "[]") if x.get("pid") == pid)


def _start_bpftrace(bt: Path, out: Path, pid: int) -> subprocess.Popen[str]:
    p = subprocess.Popen(["taskset", "-c", TRACER_CPU, "bpftrace", "-o", str(out), str(bt),
                          str(pid)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # attached once every tracepoint has its perf event (bpftool perf), which bpftrace
    # itself does not announce
    deadline = time.monotonic() + ATTACH_TIMEOUT
    while _perf_attached(p.pid) < PROBES:
        if p.poll() is not None or time.monotonic() > deadline:
            err = _stop(p) if p.poll() is None else (p.communicate()[1] or "")
            lines = [ln for ln in err.splitlines() if "RLIMIT_MEMLOCK" not in ln]
            raise RuntimeError("bpftrace did not attach: " + " ".join(lines)[-300:])
        time.sleep(0.05)
    return p


def _cpu_ticks(pid: int) -> int:
    """User and system clock ticks of every thread of process pid so far."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a thread that ended meanwhile
        total += int(fields[11]) + int(fields[12])
    return total


def tracer_stats(tracer: subprocess.Popen[str] | None,
                 floor: Floor | None) -> dict[int, tuple[int, int]]:
    """run_time_ns and run_cnt of the programs of the floor or of a tracer process, by id;
    empty with neither."""
    if floor is not None:
        return bpfstats.of_ids(floor.ids)
    return bpfstats.of_pid(tracer.pid) if tracer else {}


def _one(ctx: Context, who: str, files: int, where: Path, bt: Path) -> dict[str, Any]:
    then_files = then_files_for(files)
    load = CreateLoad(ctx.tmp, files, then_files, where)
    out = ctx.tmp / f"overhead-{who}.jsonl"
    out.unlink(missing_ok=True)
    tracer: subprocess.Popen[str] | None = None
    floor: Floor | None = None
    try:
        if who == "floor":
            floor = Floor()
        elif who == "pipeline":
            tracer = _start_pipeline(out, load.proc.pid, [])
        elif who == "pipeline_kernel":
            tracer = _start_pipeline(out, load.proc.pid, _queue_for(files + then_files))
            os.kill(tracer.pid, signal.SIGSTOP)
        elif who == "bpftrace":
            tracer = _start_bpftrace(bt, out, load.proc.pid)
        ticks = _cpu_ticks(tracer.pid) if tracer else 0
        info = load.go()
        # counting only while the second loop runs: it costs every program run two clock
        # reads, which the first loop's timing must not include; and bpftrace, asked to stop
        # while the kernel counts, was seen not to exit here
        with bpfstats.Enabled():
            before = tracer_stats(tracer, floor)
            then = load.go_then()
            after = tracer_stats(tracer, floor)
        ticks = _cpu_ticks(tracer.pid) - ticks if tracer else 0
        if tracer is not None:
            if who == "pipeline_kernel":
                os.kill(tracer.pid, signal.SIGCONT)
            err = _stop(tracer)
            if tracer.returncode not in (0, -signal.SIGINT):
                raise RuntimeError(f"{who} failed ({tracer.returncode}): {err.strip()[-300:]}")
    finally:
        if tracer is not None and tracer.poll() is None:
            tracer.kill()
            tracer.wait()
        if floor is not None:
            floor.close()
        load.close()
    st = bpfstats.delta(before, after)
    captured = _count_lines(out) if tracer else 0
    out.unlink(missing_ok=True)
    return {"created": info["created"], "then_created": then["created"],
            "seconds": info["seconds"],
            "us_per_file": 1e6 * info["seconds"] / info["created"],
            "cpu_seconds": info["cpu_seconds"],
            "cpu_us_per_file": 1e6 * info["cpu_seconds"] / info["created"],
            "tracer_cpu_seconds": ticks / os.sysconf("SC_CLK_TCK"), "captured": captured,
            "bpf_run_time_ns": st.run_time_ns, "bpf_run_cnt": st.run_cnt,
            "bpf_progs": st.progs}


def run(ctx: Context) -> PartResult:
    res = PartResult()
    files = int(ctx.pick(5_000, 100_000))
    where = _tmpfs_root()
    why = bpftrace_missing()
    contenders = [c for c in CONTENDERS if c != "bpftrace" or why is None]
    if why is not None:
        res.skipped.append(Skipped("bpftrace", why))
    lsm = bpf_lsm_missing()
    if lsm is not None:
        res.skipped.append(Skipped("the pipeline on BPF LSM", lsm))
    bt = ctx.tmp / "overhead.bt"
    bt.write_text(script())
    rounds: dict[str, list[dict[str, Any]]] = {c: [] for c in contenders}
    ctx.progress.start("overhead", ctx.rounds)
    for _ in range(ctx.rounds):
        for who in contenders:  # alternating, round by round
            ctx.progress.note(who)
            rounds[who].append(_one(ctx, who, files, where, bt))
        ctx.progress.tick()
    res.raw = {"files_per_round": files, "load_cpu": int(LOAD_CPU),
               "tracer_cpu": int(TRACER_CPU), "bpftrace_script": script(), "rounds": rounds}
    _questions(res, rounds)
    return res


def _overheads(q: Question, rounds: dict[str, list[dict[str, Any]]], key: str, what: str,
               overhead: str) -> None:
    """Each contender's time per creation (rounds' `key`), its overhead against the same
    round's run with nothing attached, and the targets on the pipeline's."""
    us = {c: [r[key] for r in rs] for c, rs in rounds.items()}
    for c in rounds:
        q.add(f"{c}: {what}", "us", us[c])
    over = {c: [100.0 * (x - 1.0) for x in ratios(us[c], us["none"])]
            for c in rounds if c != "none"}
    for c, xs in over.items():
        q.add(f"{c}: {overhead}", "%", xs,
              Target("<=", TARGET_OVERHEAD_PCT) if c == "pipeline" else None)
    if "floor" in over:
        # what the pipeline's own work adds, over what any tracer of these tracepoints pays
        q.add(f"pipeline: {overhead} beyond the floor", "points",
              [p - f for p, f in zip(over["pipeline"], over["floor"], strict=True)])
    if "bpftrace" in over:
        q.add(f"pipeline {overhead} / bpftrace {overhead}", "x",
              ratios(over["pipeline"], over["bpftrace"]), Target("<=", TARGET_VS_BPFTRACE))


def _questions(res: PartResult, rounds: dict[str, list[dict[str, Any]]]) -> None:
    q = res.question("What does tracing cost each file creation?",
                     note="time per openat(O_CREAT)+close on tmpfs; overhead against the "
                          "same round's run with nothing attached; pipeline_kernel: the "
                          "pipeline stopped while the load runs (its kernel side alone)")
    _overheads(q, rounds, "us_per_file", "time per creation", "overhead")
    cq = res.question("What does tracing cost the load's own CPU time?",
                     note="the load's user and kernel CPU time per creation: what other "
                          "processes on its CPU take meanwhile is left out, what the tracer "
                          "makes its calls do (programs, tracepoints, interrupts) is in")
    _overheads(cq, rounds, "cpu_us_per_file", "CPU time per creation", "CPU overhead")
    k = res.question("How much kernel time does each tracer spend per event?",
                     note="run_time_ns of every BPF program the tracer holds, counted by the "
                          "kernel (BPF_ENABLE_STATS) during the load's second loop, / its "
                          "creations (each one captured event)")
    for c in rounds:
        if c == "none":
            continue
        if c == "floor":  # it captures nothing: per run, one run per creation
            k.add("floor: BPF run time per run", "ns",
                  [r["bpf_run_time_ns"] / max(r["bpf_run_cnt"], 1) for r in rounds[c]])
            continue
        k.add(f"{c}: BPF run time per captured event", "ns",
              [r["bpf_run_time_ns"] / max(r["then_created"], 1) for r in rounds[c]])
    t = res.question("How much CPU does each tracer use per event?",
                     note="the tracer process's user and system time while both loops ran "
                          "(clock ticks from /proc), / events captured")
    for c in rounds:
        if c in ("none", "floor", "pipeline_kernel"):
            continue
        t.add(f"{c}: tracer CPU per captured event", "us",
              [1e6 * r["tracer_cpu_seconds"] / max(r["captured"], 1) for r in rounds[c]])
    cap = res.question("Does each tracer capture every creation?",
                       note="events in the tracer's output / files created (both loops)")
    for c in rounds:
        if c in ("none", "floor"):
            continue
        cap.add(f"{c}: captured / created", "%",
                [100.0 * r["captured"] / (r["created"] + r["then_created"])
                 for r in rounds[c]])


def plots(res: PartResult) -> list[Plot]:
    from .plots import bars

    q: Question = res.questions[0]
    per = [f for f in q.figures if f.name.endswith(": time per creation")]
    cpu = [f for f in res.questions[1].figures if f.name.endswith(": CPU time per creation")]
    k = res.questions[2].figures
    fig = bars("Cost of tracing file creation (median, min-max whiskers)",
               [("time per creation", "µs per openat+close",
                 [(f.name.split(":")[0], f) for f in per]),
                ("the load's CPU time per creation", "CPU µs per openat+close",
                 [(f.name.split(":")[0], f) for f in cpu]),
                ("in-kernel BPF time", "ns per captured event",
                 [(f.name.split(":")[0], f) for f in k])])
    return [Plot("overhead", fig)]
