"""Boot one of Debian's kernels under QEMU with this machine's root filesystem shared
read-only, run a command in it from the checkout, and return what its console said.

scripts/setup-vm.py (make vm) fetches the kernels and builds their initramfs into
build/vm, and kernels.json there says which can be booted. A boot:

- starts virtiofsd in a private mount namespace, sharing a read-only bind mount of `/` (and
  of the checkout, if it is on another file system): the guest cannot change anything here;
- starts QEMU with software emulation (TCG, one host thread: with a thread per vCPU a 6.18
  guest once crashed at boot), the kernel, and the initramfs with a small cpio appended
  that tells tests/vm/init (also appended, so an edit needs no `make vm`) the checkout's
  path and the command;
- reads the serial console until the guest powers off or the time is up; both processes
  are ended and the private directory removed on every path.

The console's lines (ANSI escapes and carriage returns removed) are returned with the
command's steps cut out (tests/vm/guest.sh: STEP-BEGIN name ... STEP-END name status) and
the LOADALL records of tests/vm/loadall.c parsed. A kernel that dies before init's first
line is booted once more, and `notes` says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import newc  # noqa: E402  (scripts/newc.py: the initramfs' format, shared with setup-vm.py)

VM_DIR = ROOT / "build" / "vm"
INIT = ROOT / "tests" / "vm" / "init"
QEMU = "qemu-system-x86_64"
# Instruction counting: every guest instruction advances the guest's clocks by 2**0 ns
# and idle time is skipped (sleep=off), so a guest's CPU time is the instructions it ran,
# whatever else the host does meanwhile.
ICOUNT = ("-icount", "shift=0,sleep=off")
VIRTIOFSD = (Path("/usr/libexec/virtiofsd"), Path("/usr/lib/qemu/virtiofsd"))
# bpf must be in lsm= for BPF LSM programs to attach
CMDLINE = ("console=ttyS0 lsm=lockdown,capability,landlock,yama,bpf panic=-1 "
           "rcupdate.rcu_cpu_stall_timeout=300 nowatchdog")
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")


@dataclasses.dataclass(frozen=True)
class Kernel:
    """One entry of build/vm/kernels.json."""

    name: str
    available: bool
    reason: str = ""
    package: str = ""
    version: str = ""
    sha256: str = ""
    release: str = ""
    vmlinuz: Path = Path()
    initrd: Path = Path()


def kernels(vm_dir: Path = VM_DIR) -> dict[str, Kernel]:
    """The kernels setup-vm.py prepared, by series ("6.12"); empty when it never ran."""
    try:
        doc = json.loads((vm_dir / "kernels.json").read_text())
    except FileNotFoundError:
        return {}
    out: dict[str, Kernel] = {}
    for name, k in doc["kernels"].items():
        if not k.get("available"):
            out[name] = Kernel(name, False, k.get("reason", "unavailable"))
            continue
        out[name] = Kernel(name, True, "", k["package"], k["version"], k["sha256"],
                           k["release"], vm_dir / k["vmlinuz"], vm_dir / k["initrd"])
    return out


def clean(raw: bytes) -> str:
    """A console line as text: no ANSI escapes, no carriage returns."""
    return _ANSI.sub("", raw.decode(errors="replace")).replace("\r", "").rstrip("\n")


@dataclasses.dataclass
class Step:
    name: str
    rc: int | None  # None: it never ended (the guest died or the time ran out)
    lines: list[str]
    seconds: float | None  # as the host saw the console lines arrive


@dataclasses.dataclass
class LoadResult:
    """One program's verdict from tests/vm/loadall.c."""

    obj: str
    prog: str
    ok: bool
    errno: int = 0
    errname: str = ""
    message: str = ""
    log: list[str] = dataclasses.field(default_factory=list)

    def describe(self) -> str:
        if self.ok:
            return f"{self.obj} {self.prog}: loaded"
        tail = "\n".join(f"      {line}" for line in self.log) or "      (no log)"
        return f"{self.obj} {self.prog}: {self.errname} {self.message}\n{tail}"


def parse_loadall(lines: Sequence[str]) -> dict[tuple[str, str], LoadResult]:
    out: dict[tuple[str, str], LoadResult] = {}
    for line in lines:
        parts = line.split(" ", 3)
        if len(parts) >= 4 and parts[0] == "LOADALL":
            obj, prog, rest = parts[1], parts[2], parts[3]
            if rest == "OK":
                out[obj, prog] = LoadResult(obj, prog, True)
            elif rest.startswith("FAIL "):
                f = rest.split(" ", 3)
                out[obj, prog] = LoadResult(obj, prog, False, int(f[1]) if len(f) > 1 and
                                            f[1].isdigit() else 0, f[2] if len(f) > 2 else "",
                                            f[3] if len(f) > 3 else "")
        elif len(parts) >= 4 and parts[0] == "LOADALL-LOG" and (parts[1], parts[2]) in out:
            out[parts[1], parts[2]].log.append(parts[3])
    return out


@dataclasses.dataclass
class Boot:
    """What one boot (or two, see notes) showed."""

    kernel: Kernel
    command: list[str]
    console: list[str]  # every line of the last boot
    release: str | None  # the kernel init found itself on (VM-INIT)
    init_fail: str | None  # VM-INIT-FAIL: the guest could not set up its root
    guest_rc: int | None  # GUEST-DONE: the command's status
    steps: dict[str, Step]
    seconds: float  # the last boot, from QEMU's start to its exit
    boots: int
    notes: list[str]
    timed_out: bool

    def problem(self) -> str | None:
        """Why the command did not run to its end, or None if it did."""
        if self.timed_out:
            return "the time ran out"
        if self.release is None:
            return "the kernel died before init's first line"
        if self.init_fail is not None:
            return f"init failed: {self.init_fail}"
        if self.guest_rc is None:
            return "the guest stopped before the command ended (no GUEST-DONE)"
        return None

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.console[-n:])

    def loadall(self, step: str = "loadall") -> dict[tuple[str, str], LoadResult]:
        s = self.steps.get(step)
        return parse_loadall(s.lines) if s else {}


def _split_steps(lines: Sequence[tuple[float, str]]) -> dict[str, Step]:
    steps: dict[str, Step] = {}
    current: Step | None = None
    started = 0.0
    for t, line in lines:
        m = re.fullmatch(r"STEP-BEGIN (\S+)", line)
        if m:
            current, started = Step(m.group(1), None, [], None), t
            steps[current.name] = current
            continue
        m = re.fullmatch(r"STEP-END (\S+) (\d+)", line)
        if m and current is not None and m.group(1) == current.name:
            current.rc, current.seconds = int(m.group(2)), t - started
            current = None
            continue
        if current is not None:
            current.lines.append(line)
    return steps


def _virtiofsd_args(sock: Path, shared: Path) -> list[str]:
    for binary in VIRTIOFSD:
        if binary.exists():
            break
    else:
        raise FileNotFoundError("no virtiofsd (run `make vm`)")
    if binary.name == "virtiofsd" and binary.parent.name == "qemu":  # QEMU's own (C)
        return [str(binary), f"--socket-path={sock}", "-o", f"source={shared}",
                "-o", "sandbox=chroot", "-o", "cache=auto", "-o", "log_level=warn"]
    args = [str(binary), f"--socket-path={sock}", f"--shared-dir={shared}",
            "--sandbox=chroot", "--cache=auto", "--log-level=warn"]
    helptext = subprocess.run([str(binary), "--help"], capture_output=True, text=True,
                              check=False).stdout
    if "--readonly" in helptext:
        args.append("--readonly")
    return args


def _root_is_a_mount() -> bool:
    """Whether / is a mount point here: not so in a chroot into a plain directory, whose
    mount table (/proc/self/mountinfo) then has no entry for /."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        return any(len(fields) > 4 and fields[4] == "/"
                   for fields in (line.split() for line in f))


def _stop(proc: subprocess.Popen[Any] | None, grace: float = 5.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclasses.dataclass
class _Attempt:
    lines: list[tuple[float, str]]
    timed_out: bool
    saw_init: bool
    seconds: float


def _attempt(kernel: Kernel, initrd: Path, work: Path, repo: Path, timeout: float,
             init_timeout: float, memory: str, cpus: int, icount: bool,
             log: IO[bytes] | None) -> _Attempt:
    shared = work / "root"
    sock = work / "virtiofs.sock"
    shared.mkdir(mode=0o700)
    # A read-only bind mount of / (not recursive: /proc, /sys, /dev stay out) in a mount
    # namespace of virtiofsd's own, so nothing of it is seen or left here; QEMU's virtiofsd
    # also writes a pid file in /run/virtiofsd, and gets a /run of its own there for it.
    binds = ['mount --bind / "$1"', 'mount -o remount,bind,ro "$1"',
             "mount -t tmpfs -o mode=0755 tmpfs /run"]
    if repo.stat().st_dev != Path("/").stat().st_dev:
        q = shlex.quote(str(repo))
        binds += [f'mount --bind {q} "$1"{q}', f'mount -o remount,bind,ro "$1"{q}']
    script = "set -e; " + "; ".join(binds) + '; shift; exec "$@"'
    fsd: subprocess.Popen[bytes] | None = None
    qemu: subprocess.Popen[bytes] | None = None
    lines: list[tuple[float, str]] = []
    reader: threading.Thread | None = None
    start = time.monotonic()
    errors = work / "virtiofsd.err"  # a file, not a pipe nobody reads while it runs
    try:
        if _root_is_a_mount():
            argv = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script,
                    "sh", str(shared), *_virtiofsd_args(sock, shared)]
        else:
            # A chroot whose / is no mount point (CI's fresh root): no mount namespace can
            # make its mounts private, and a bind mount made under / would show outside.
            # virtiofsd shares / itself; the guest still mounts it read-only (tests/vm/init)
            # and runs only this checkout's own test steps.
            argv = _virtiofsd_args(sock, Path("/"))
        with open(errors, "wb") as err:
            fsd = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=err)
        deadline = time.monotonic() + 20
        while not sock.exists():
            if fsd.poll() is not None or time.monotonic() > deadline:
                _stop(fsd)
                said = errors.read_text(errors="replace").strip()[-2000:]
                raise RuntimeError(f"virtiofsd did not start: {said}")
            time.sleep(0.05)
        qemu = subprocess.Popen(
            [QEMU, "-accel", "tcg,thread=single", *(ICOUNT if icount else ()), "-smp", str(cpus),
             "-m", memory,
             "-nographic", "-no-reboot", "-nic", "none",
             "-kernel", str(kernel.vmlinuz), "-initrd", str(initrd), "-append", CMDLINE,
             "-chardev", f"socket,id=fs,path={sock}",
             "-device", "vhost-user-fs-pci,chardev=fs,tag=root",
             "-object", f"memory-backend-memfd,id=mem,size={memory},share=on",
             "-numa", "node,memdev=mem"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        start = time.monotonic()
        out = qemu.stdout
        assert out is not None

        init_seen = threading.Event()

        def read() -> None:
            for raw in out:
                if log is not None:
                    log.write(raw)
                    log.flush()
                text = clean(raw)
                if text.startswith("VM-INIT "):
                    init_seen.set()
                lines.append((time.monotonic(), text))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        timed_out = False
        while qemu.poll() is None:
            now = time.monotonic()
            if now - start > timeout or (not init_seen.is_set() and now - start > init_timeout):
                timed_out = init_seen.is_set()
                break
            time.sleep(0.2)
        _stop(qemu)
        reader.join(10)
        return _Attempt(list(lines), timed_out, init_seen.is_set(), time.monotonic() - start)
    finally:
        _stop(qemu)
        _stop(fsd)
        # without a /run of its own, QEMU's virtiofsd leaves its pid file (named after
        # the socket's path) in the shared one
        for pid_file in Path("/run/virtiofsd").glob(f"*{work.name}*.pid"):
            with contextlib.suppress(OSError):
                pid_file.unlink()
        for p in (qemu, fsd):
            if p is not None:
                for f in (p.stdout, p.stderr):
                    if f is not None:
                        f.close()


_DYING = re.compile(r"Kernel panic|BUG:|Oops|general protection|RIP:|int3|Call Trace")


def _last_words(lines: Sequence[tuple[float, str]]) -> str:
    """What a kernel that died said about it: its oops/panic lines, else its last lines."""
    texts = [t for _, t in lines if t.strip()]
    dying = [t for t in texts if _DYING.search(t)][:6]
    shown = dying or texts[-8:]
    return "console: " + " | ".join(shown) if shown else "no console output"


def _remove_work(work: Path) -> None:
    """Remove the private directory; never through a mount (the read-only root is mounted
    on work/root only inside virtiofsd's namespace, gone with it, but check)."""
    shared = work / "root"
    if shared.exists() and (os.path.ismount(shared)
                            or shared.stat().st_dev != work.stat().st_dev):
        raise RuntimeError(f"{shared} is still a mount point; not removing {work}")
    shutil.rmtree(work)


def boot(kernel: Kernel, command: Sequence[str], *, repo: Path = ROOT,
         files: Sequence[Path] = (), timeout: float = 1800.0, init_timeout: float = 300.0,
         memory: str = "2G", cpus: int = 2, icount: bool = False,
         log_path: Path | None = None) -> Boot:
    """Boot `kernel`, run `command` (argv, from `repo`, as root) and power off.

    `files`: copied now into the initramfs and found in the guest in /run/vm/files under
    their names: a snapshot, where the shared tree may change while the guest runs (the
    tree is shared live; someone rebuilding build/ meanwhile would otherwise be seen).
    `timeout`: seconds from QEMU's start to the guest's power-off before both are ended;
    `init_timeout`: the same until init's first line (then it is booted once more).
    `icount`: the guest's clocks count instructions, one nanosecond each (ICOUNT).
    `log_path`: the raw console is also written there (replaced), for a look afterwards."""
    if not kernel.available:
        raise ValueError(f"kernel {kernel.name} is unavailable: {kernel.reason}")
    if shutil.which(QEMU) is None:
        raise FileNotFoundError(f"no {QEMU} (run `make vm`)")
    work = Path(tempfile.mkdtemp(prefix="arena-vm-"))
    notes: list[str] = []
    log: IO[bytes] | None = None
    try:
        os.chmod(work, 0o700)
        env = (f"VM_REPO={shlex.quote(str(repo))}\n"
               f"VM_CMD={shlex.quote(shlex.join(command))}\n").encode()
        entries = [("vm", stat.S_IFDIR | 0o755, b"", 0, 0),
                   ("vm/env", stat.S_IFREG | 0o644, env, 0, 0),
                   ("init", stat.S_IFREG | 0o755, INIT.read_bytes(), 0, 0)]
        if files:
            entries.append(("vm/files", stat.S_IFDIR | 0o755, b"", 0, 0))
        names = set()
        for f in files:
            if f.name in names or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", f.name):
                raise ValueError(f"{f}: a file name the guest cannot take, or taken twice")
            names.add(f.name)
            entries.append((f"vm/files/{f.name}", stat.S_IFREG | 0o644, f.read_bytes(), 0, 0))
        overlay = newc.archive(entries)
        initrd = work / "initrd.img"
        base = kernel.initrd.read_bytes()
        if base[:2] != b"\x1f\x8b":
            raise ValueError(f"{kernel.initrd} is not the gzip initramfs setup-vm.py writes")
        # the kernel looks for an uncompressed archive only at a multiple of 4 bytes
        initrd.write_bytes(base + b"\0" * (-len(base) % 4) + overlay)
        if log_path is not None:
            with contextlib.suppress(FileNotFoundError):
                log_path.unlink()
            log = os.fdopen(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                                    | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644), "wb")
        boots = 0
        while True:
            boots += 1
            att = _attempt(kernel, initrd, work, repo, timeout, init_timeout, memory, cpus,
                           icount, log)
            (work / "root").rmdir()
            for name in ("virtiofs.sock", "virtiofsd.err"):
                with contextlib.suppress(FileNotFoundError):
                    (work / name).unlink()
            if att.saw_init or boots >= 2:
                break
            notes.append(f"boot {boots}: the kernel died before init's first line "
                         f"({_last_words(att.lines)}); booted once more")
        texts = [t for _, t in att.lines]
        release = init_fail = None
        guest_rc: int | None = None
        for t in texts:
            if t.startswith("VM-INIT ") and release is None:
                release = t.split(" ", 1)[1]
            elif t.startswith("VM-INIT-FAIL "):
                init_fail = t.split(" ", 1)[1]
            elif m := re.fullmatch(r"GUEST-DONE (\d+)", t):
                guest_rc = int(m.group(1))
        return Boot(kernel, list(command), texts, release, init_fail, guest_rc,
                    _split_steps(att.lines), att.seconds, boots, notes, att.timed_out)
    finally:
        if log is not None:
            log.close()
        _remove_work(work)
