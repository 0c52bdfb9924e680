"""One run of the pipeline inside a test VM (tests/vm/guest.sh), on the trigger given as
argv[1] (`lsm` or `tracepoint`): path filters from a config file, the process table with
ancestors, then file creations of every kind the path resolver and the filters must get
right, and a filter change by SIGHUP. It prints, as tagged lines on the console, what it
made (MANIFEST-<trigger>: one JSON list), every event the pipeline wrote
(EVENT-<trigger>: one JSON record a line), the pipeline's log lines (LOG-<trigger>) and
its final statistics (PIPELINE-<trigger>); tests/test_vm_kernels.py judges them.

Runs as root in the guest, whose /tmp is a private tmpfs; argv[2] is the checkout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

READY_TIMEOUT = 900.0  # the verifier runs under emulation: loading takes minutes
GEN_TIMEOUT = 120.0
LONG_COMPONENT = "l" * 99  # six of them and a file: a path of over 600 bytes

# the calls each kind of creation makes, on each trigger
CALLS = {
    "tracepoint": {"create": "openat", "mkdir": "mkdirat", "fifo": "mknodat"},
    "lsm": {"create": "inode_create", "mkdir": "inode_mkdir", "fifo": "inode_mknod"},
}


class Run:
    """The pipeline in the background; its stderr collected line by line."""

    def __init__(self, argv: list[str], cwd: str) -> None:
        self.proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with self._cond:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.lines.append("")  # end of stream
            self._cond.notify_all()

    def wait_line(self, needle: str, timeout: float) -> str:
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                for ln in self.lines:
                    if needle in ln:
                        return ln
                left = end - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise SystemExit(f"scenario: no '{needle}' from the pipeline: "
                                     + " | ".join(self.lines))
                self._cond.wait(min(left, 1.0))

    def wait_end(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        with self._cond:
            while not (self.lines and self.lines[-1] == "") and time.monotonic() < end:
                self._cond.wait(1.0)


class Scenario:
    def __init__(self, trigger: str, base: Path) -> None:
        self.trigger = trigger
        self.calls = CALLS[trigger]
        self.base = base
        self.made: list[dict[str, Any]] = []

    def expect(self, path: Path | str, kind: str, given: str, **extra: Any) -> None:
        """Record one creation the pipeline must report: its whole path, the call, and the
        name (the argument as given on the fallback, the dentry's name on LSM)."""
        name = given if self.trigger == "tracepoint" else os.path.basename(str(path))
        self.made.append({"path": str(path), "syscall": self.calls[kind], "name": name,
                          **extra})

    def create(self, path: Path, given: str | None = None, dir_fd: int | None = None,
               **extra: Any) -> None:
        arg = given if given is not None else str(path)
        os.close(os.open(arg, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600, dir_fd=dir_fd))
        self.expect(path, "create", arg, **extra)

    def mkdir(self, path: Path, dir_fd: int) -> None:
        os.mkdir(path.name, 0o700, dir_fd=dir_fd)  # mkdirat
        self.expect(path, "mkdir", path.name)

    def fifo(self, path: Path, dir_fd: int) -> None:
        os.mkfifo(path.name, 0o600, dir_fd=dir_fd)  # mknodat
        self.expect(path, "fifo", path.name, fifo=True)

    def run_cmd(self, argv: list[str], path: Path, **extra: Any) -> str:
        """A creation by another program (argument: the absolute path)."""
        out = subprocess.run(argv, check=True, stdout=subprocess.PIPE, text=True).stdout
        self.expect(path, "create", str(path), **extra)
        return out


def write_config(cfg: Path, include: list[Path], exclude: list[Path]) -> None:
    def arr(ps: list[Path]) -> str:
        return "[" + ", ".join(json.dumps(str(p)) for p in ps) + "]"
    cfg.write_text(f"include_paths = {arr(include)}\nexclude_paths = {arr(exclude)}\n"
                   "process_table = true\nancestors = 3\n")


def main() -> None:
    trigger, repo = sys.argv[1], sys.argv[2]
    base = Path(tempfile.mkdtemp(prefix=f"scn-{trigger}-", dir="/tmp"))
    inc, work, fd_dir = base / "in", base / "in" / "work", base / "in" / "work" / "d"
    excluded, outside, late = base / "in" / "excluded", base / "out", base / "in" / "late"
    shared, src, bind = base / "in" / "shared", base / "in" / "src", base / "in" / "bind"
    ns_dir, jail = base / "in" / "ns", base / "in" / "jail"
    deep, ren = inc / "long", work / "ren"
    for d in (inc, work, fd_dir, excluded, outside, late, shared, src, bind, ns_dir, jail, deep,
              ren / "a" / "b"):
        d.mkdir(parents=True, exist_ok=True)
    for _ in range(6):
        deep = deep / LONG_COMPONENT
        deep.mkdir()
    for d in (base, inc):
        d.chmod(0o755)  # nobody reaches shared/
    shared.chmod(0o1777)
    subprocess.run(["mount", "--bind", str(src), str(bind)], check=True)
    cfg = base / "config.toml"
    write_config(cfg, [inc], [excluded])
    out = base / "events.jsonl"

    run = Run([sys.executable, "-m", "pipeline", "--trigger", trigger, "--config", str(cfg),
               "--sink", "jsonl", "--output", str(out)], repo)
    try:
        scenario(trigger, base, run, cfg, out)
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
        subprocess.run(["umount", str(bind)], check=False)


def scenario(trigger: str, base: Path, run: Run, cfg: Path, out: Path) -> None:
    inc, work, fd_dir = base / "in", base / "in" / "work", base / "in" / "work" / "d"
    excluded, outside, late = base / "in" / "excluded", base / "out", base / "in" / "late"
    shared, bind = base / "in" / "shared", base / "in" / "bind"
    ns_dir, jail = base / "in" / "ns", base / "in" / "jail"
    deep = inc / "long"
    for _ in range(6):
        deep = deep / LONG_COMPONENT
    run.wait_line("pipeline: ready in", READY_TIMEOUT)

    s = Scenario(trigger, base)
    os.chdir(work)
    s.create(work / "rel", given="rel")  # relative to the working directory
    dfd = os.open(fd_dir, os.O_RDONLY | os.O_DIRECTORY)
    s.create(fd_dir / "viafd", given="viafd", dir_fd=dfd)  # openat on a descriptor
    s.mkdir(fd_dir / "newdir", dfd)
    s.fifo(fd_dir / "fifo", dfd)
    os.close(dfd)
    s.create(work / "dotdot", given="d/../dotdot")
    # renames between creations in one directory, whose path the producer keeps cached
    # (per task on LSM, per CPU on the fallback): each creation shows the names of now
    ren = work / "ren"
    s.create(ren / "a" / "b" / "r1")
    os.rename(ren / "a", ren / "c")
    s.create(ren / "c" / "b" / "r2")
    dfd = os.open(ren / "c" / "b", os.O_RDONLY | os.O_DIRECTORY)
    s.create(ren / "c" / "b" / "r3", given="r3", dir_fd=dfd)
    os.rename(ren / "c" / "b", ren / "c" / "z")
    s.create(ren / "c" / "z" / "r4", given="r4", dir_fd=dfd)
    s.mkdir(ren / "c" / "z" / "rd", dfd)
    os.close(dfd)
    s.run_cmd(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "touch",
               str(shared / "bynobody")], shared / "bynobody", uid=65534)
    s.create(bind / "viabind")  # the path through the bind mount, not its source
    ns = s.run_cmd(["unshare", "-m", "sh", "-c",
                    f"mount -t tmpfs scn {ns_dir} && touch {ns_dir}/nsfile"
                    " && stat -L -c %i /proc/self/ns/mnt"], ns_dir / "nsfile")
    s.made[-1]["mnt_ns"] = int(ns)
    # a chroot's file: the path from the namespace's root, the name as the caller gave it
    subprocess.run([sys.executable, "-c",
                    "import os, sys; os.chroot(sys.argv[1]); os.chdir('/');"
                    " os.close(os.open('/c', os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))",
                    str(jail)], check=True)
    s.expect(jail / "c", "create", "/c")
    dfd = os.open(deep, os.O_RDONLY | os.O_DIRECTORY)
    s.create(deep / "deepfile", given="deepfile", dir_fd=dfd, path_truncated=True)
    os.close(dfd)
    # touch, exec'd by a shell that a shell forked (the `; true` keeps the outer one)
    s.run_cmd(["sh", "-c", f"sh -c 'exec touch {work}/tree'; true"], work / "tree",
              parents=["sh"], grandparent=os.getpid())
    # filtered out: never reported
    for p in (excluded / "x", outside / "y"):
        os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))

    # a new filter by SIGHUP, then one file on each side of it
    write_config(cfg, [inc], [excluded, late])
    run.proc.send_signal(signal.SIGHUP)
    run.wait_line("generation 2 in force", GEN_TIMEOUT)
    os.close(os.open(late / "z", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    s.create(work / "after", filter_gen=2)

    time.sleep(1.0)  # the reader's next batch
    run.proc.send_signal(signal.SIGINT)
    rc = run.proc.wait(120)
    run.wait_end(10)
    final = [ln for ln in run.lines if ln.startswith("pipeline: final ")]
    print(f"MANIFEST-{trigger} {json.dumps(s.made)}", flush=True)
    for ln in out.read_text().splitlines():
        print(f"EVENT-{trigger} {ln}", flush=True)
    for ln in run.lines:
        if ln and not ln.startswith(("pipeline: final ", "pipeline: stats ")):
            print(f"LOG-{trigger} {ln}", flush=True)
    stats = json.loads(final[-1][len("pipeline: final "):]) if final else None
    print(f"PIPELINE-{trigger} {json.dumps({'rc': rc, 'final': stats, 'pid': os.getpid()})}",
          flush=True)


if __name__ == "__main__":
    main()
