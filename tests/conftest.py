"""Shared helpers: run the real pipeline as a subprocess and read its stderr."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, ClassVar

import pytest
from helpers.cgroup_dirs import cg_base  # noqa: F401  (a fixture the cgroup tests share)

ROOT = Path(__file__).resolve().parent.parent

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs: needs root")
DEFAULT_PIN_DIR = Path("/sys/fs/bpf/arena-pipeline")


# -- the extension under test is built from the sources in this tree ----------------------

# the extension modules (setup.py): import name -> the .so file's stem and folder
EXTENSIONS = {"pipeline._core": ROOT / "pipeline" / "_core",
              "pipeline._ds": ROOT / "pipeline" / "_ds",
              "pipeline.bench._native": ROOT / "pipeline" / "bench" / "_native"}


def _newest_source() -> tuple[float, Path | None]:
    """The newest file the extension modules are built from: their C sources and the ones
    they share, the shared headers, the BPF programs and the skeletons embedded in them."""
    patterns = [("pipeline/_core", "*.[ch]"), ("pipeline/_ds", "*.[ch]"),
                ("pipeline/bench/_native", "*.[ch]"), ("pipeline/_cshared", "*.[ch]"),
                ("include", "**/*.h"), ("src", "*.c"), ("bpf", "*.[ch]"), ("build", "*.skel.h"),
                (".", "setup.py")]
    newest, which = 0.0, None
    for folder, pattern in patterns:
        for f in (ROOT / folder).glob(pattern):
            m = f.stat().st_mtime
            if m > newest:
                newest, which = m, f
    return newest, which


def _built_extension(module: str) -> Path | None:
    """The newest built .so of one extension module, or None."""
    src = EXTENSIONS[module]
    built = sorted(src.parent.glob(f"{src.name}.*.so"), key=lambda f: f.stat().st_mtime)
    return built[-1] if built else None


def _extension_stale() -> str | None:
    newest, which = _newest_source()
    for module, src in EXTENSIONS.items():
        so = _built_extension(module)
        if so is None:
            return f"{src.relative_to(ROOT)} ({module}) is not built"
        if newest > so.stat().st_mtime:
            assert which is not None
            return f"{so.relative_to(ROOT)} is older than {which.relative_to(ROOT)}"
    return None


def pytest_configure(config: pytest.Config) -> None:
    """Tests run against the extension built from this tree: a stale one is rebuilt
    (`make ext`, which rebuilds the BPF skeletons it embeds first); if that cannot be done,
    nothing runs."""
    why = _extension_stale()
    if why is None:
        return
    sys.stderr.write(f"conftest: {why}: rebuilding with `make ext`\n")
    # the stamp alone would let make skip a build whose output was replaced by an older one
    (ROOT / "build" / ".ext-ready").unlink(missing_ok=True)
    res = subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "ext"],
                         capture_output=True, text=True)
    # the build's own status may be lost in make's pipe: the result is what counts
    still = _extension_stale()
    if res.returncode != 0 or still is not None:
        out = (res.stdout + res.stderr).splitlines()
        errors = [ln.strip() for ln in out if "error" in ln.lower()] or out[-1:] or [still]
        pytest.exit(f"{why}, and `make ext` could not rebuild it: {errors[0]}; fix that, then "
                    f"run `sudo make -C {ROOT} setup` and start pytest again", returncode=2)


class PipelineProc:
    """`python -m pipeline ARGS` in the background, ready once it says so. Every run is
    also stopped at the end of the test that started it (_stop_runs_left_behind), however
    the test ended; the pipeline_proc fixture makes that explicit."""

    started: ClassVar[list[PipelineProc]] = []

    def __init__(self, *args: str, stdout: int | IO[bytes] | None = subprocess.DEVNULL,
                 wait_ready: bool = True, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.pin_dir = self._pin_dir(args)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", *args], cwd=ROOT, stdout=stdout,
            stderr=subprocess.PIPE, env=env)
        PipelineProc.started.append(self)
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._t = threading.Thread(target=self._read_stderr, daemon=True)
        self._t.start()
        if wait_ready:
            self.wait_ready()

    @staticmethod
    def _pin_dir(args: tuple[str, ...]) -> Path:
        for i, a in enumerate(args):
            if a == "--pin-dir" and i + 1 < len(args):
                return Path(args[i + 1])
            if a.startswith("--pin-dir="):
                return Path(a.split("=", 1)[1])
        return DEFAULT_PIN_DIR

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            if "ready in" in line:
                self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout: float = 60.0) -> None:
        if not self._ready.wait(timeout) or self.proc.poll() is not None:
            self.close()
            raise AssertionError(f"pipeline did not become ready: {self.stderr()}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise AssertionError(f"pipeline did not stop: {self.stderr()}") from None
        self._t.join(5)
        return rc

    def wait(self, timeout: float = 60.0) -> int:
        rc = self.proc.wait(timeout)
        self._t.join(5)
        return rc

    def stderr(self) -> str:
        return "\n".join(self.lines)

    def close(self, grace: float = 10.0) -> None:
        """Whatever state the run is in: stopped, reaped, its pins gone. A run asked to stop
        gets `grace` seconds to detach and flush, then SIGKILL."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._t.join(5)
        # unlinking the pins lets the kernel free the arena only they still held
        remove_tree(self.pin_dir / str(self.proc.pid))

    def final(self) -> dict[str, Any]:
        for line in self.lines:
            if line.startswith("pipeline: final "):
                return dict(json.loads(line[len("pipeline: final "):]))
        raise AssertionError(f"no final statistics in stderr: {self.stderr()}")



def assert_one_line(res: subprocess.CompletedProcess[str], *words: str) -> str:
    """A refusal as the project promises it: exit 2, exactly one line on stderr naming
    the problem (each of `words` in it), no traceback. Returns the line."""
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


# Creates files from a process of its own, so the pipeline (which ignores itself) sees them.
_CREATOR = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
for i in range(int(sys.argv[3])):
    os.close(os.open(f"{sys.argv[2]}-{i:06d}", os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=fd))
"""


def run_pin_names() -> set[str]:
    """What a pipeline run pins in its directory: its arena (the queue and the
    data-structure space), the burst program and the data-structure programs."""
    from pipeline.ds import registry

    return {"arena", "burst", "ds_trim", *(f"ds_run_{m.name}" for m in registry())}


def create_files(work: Path, tag: str, n: int) -> None:
    """n files named TAG-000000 ... in work, created by a child process."""
    subprocess.run([sys.executable, "-c", _CREATOR, str(work), tag, str(n)], check=True)


@pytest.fixture(scope="module")
def nobody_tree() -> Iterator[Path]:
    """The package and the libraries it imports, copied where user nobody can read them:
    the checkout and its environment may sit under /root, which nobody cannot enter. The
    environment's python is Debian's /usr/bin/python3, so the copies load under it."""
    d = Path(tempfile.mkdtemp(prefix="ap-nobody-"))
    try:
        shutil.copytree(ROOT / "pipeline", d / "pipeline",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("uvloop", "aiofiles", "orjson"):
            spec = importlib.util.find_spec(name)
            assert spec is not None and spec.origin is not None, name
            src = Path(spec.origin).parent
            shutil.copytree(src, d / src.name, ignore=shutil.ignore_patterns("__pycache__"))
        subprocess.run(["chmod", "-R", "a+rX", str(d)], check=True)
        yield d
    finally:
        shutil.rmtree(d)

def run_pipeline(*args: str, timeout: float = 30.0,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)


StartPipeline = Callable[..., PipelineProc]
Reap = Callable[[subprocess.Popen[Any]], subprocess.Popen[Any]]


@pytest.fixture
def pipeline_proc() -> Iterator[StartPipeline]:
    """Starts `python -m pipeline ARGS` like PipelineProc(...), and at teardown, passed or
    failed, stops every run it started and removes its pins: a failed test leaves no root
    process running and no arena pinned."""
    started: list[PipelineProc] = []

    def start(*args: str, wait_ready: bool = True, **kw: Any) -> PipelineProc:
        pl = PipelineProc(*args, wait_ready=False, **kw)
        started.append(pl)
        if wait_ready:
            pl.wait_ready()
        return pl

    yield start
    for pl in started:
        pl.close()


@pytest.fixture(autouse=True)
def _stop_runs_left_behind() -> Iterator[None]:
    """Runs a test started without pipeline_proc are stopped at its end too, so a failed
    assertion never leaves a root process running or an arena pinned."""
    before = len(PipelineProc.started)
    yield
    mine = PipelineProc.started[before:]
    del PipelineProc.started[before:]
    for pl in mine:
        pl.close()


@pytest.fixture
def reap() -> Iterator[Reap]:
    """Registers a helper process (listener, creator, ...) to be killed and reaped at teardown
    if the test left it running."""
    procs: list[subprocess.Popen[Any]] = []

    def add(p: subprocess.Popen[Any]) -> subprocess.Popen[Any]:
        procs.append(p)
        return p

    yield add
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    assert len(set(keys)) == len(keys), f"duplicate keys in {keys}"
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise AssertionError(f"{name} is not JSON")


def parse_line(raw: bytes) -> dict[str, Any]:
    """One line of the pipeline's output, parsed strictly: it ends with a newline, holds no
    other raw control byte (RFC 8259: none may appear unescaped in a string, and the
    formatter puts no whitespace between tokens), is valid UTF-8 (no encoded surrogates,
    no overlong forms), is one JSON object with unique keys and no NaN/Infinity."""
    assert raw.endswith(b"\n"), f"partial line: {raw[:80]!r}"
    body = raw[:-1]
    ctl = sorted({b for b in body if b < 0x20})
    assert not ctl, f"raw control bytes {[hex(b) for b in ctl]} in {body[:120]!r}"
    try:
        text = body.decode("utf-8")  # strict, unlike json.loads(bytes)'s surrogatepass
    except UnicodeDecodeError as e:
        raise AssertionError(f"line is not valid UTF-8 ({e}): {body[:120]!r}") from None
    obj = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant)
    assert isinstance(obj, dict), f"not a JSON object: {body[:120]!r}"
    return obj


def parse_jsonl(data: bytes) -> list[dict[str, Any]]:
    """Every line of a JSON-lines buffer, each through parse_line."""
    if not data:
        return []
    assert data.endswith(b"\n"), f"partial last line: {data[-80:]!r}"
    # split on "\n" alone: bytes.splitlines() would also split on a raw "\r"
    return [parse_line(ln + b"\n") for ln in data[:-1].split(b"\n")]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSON-lines file, each through parse_line."""
    with open(path, "rb") as f:
        return [parse_line(line) for line in f]


def count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def wait_for(pred: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def remove_tree(path: Path) -> None:
    """Remove path without following links (shutil.rmtree works through
    directory descriptors); for tests' own scratch paths."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


@pytest.fixture
def pin_root() -> Any:
    """A pin directory of the test's own, so runs never see each other's pins."""
    d = Path(f"/sys/fs/bpf/arena-pipeline-test-{os.getpid()}-{time.monotonic_ns()}")
    yield d
    remove_tree(d)


def _chrooted() -> bool:
    """Whether this process runs under a chroot (CI's fresh-machine is one): its "/" is not
    the root of PID 1, the initial namespace's root from which the kernel resolves the
    absolute paths in events."""
    try:
        ours, init = os.stat("/"), os.stat("/proc/1/root")
        return (ours.st_dev, ours.st_ino) != (init.st_dev, init.st_ino)
    except OSError:
        pass
    # PID 1's root may be closed to us (EACCES in a chroot); then: a chroot's "/" is
    # not a mount point, so no mount of /proc/self/mountinfo is mounted on "/"
    try:
        with open("/proc/self/mountinfo") as f:
            return not any(line.split()[4] == "/" for line in f if len(line.split()) > 4)
    except OSError:
        return False


# Under a chroot an event's path is the chroot's own location followed by the path seen
# inside it; the tests that compare whole paths say so and compare the part they can know.
CHROOTED = _chrooted()
CHROOT_REASON = ("runs under a chroot: the kernel resolves paths from the initial "
                 "namespace's root, so every path carries the chroot's location, which "
                 "this test cannot know; the exact-path tests run outside a chroot")


def same_path_seen_by_kernel(got: str | bytes, want: str | bytes) -> bool:
    """got (an event's path) is want, or under a chroot want behind the chroot's location."""
    if got == want:
        return True
    sep = b"/" if isinstance(want, bytes) else "/"
    return CHROOTED and got.endswith(want) and got[:-len(want)].startswith(sep)  # type: ignore[arg-type]


def inside_chroot(got: Any, want: Any) -> Any:
    """want where got is want behind the chroot's location (same_path_seen_by_kernel),
    else got: lets a test compare whole structures holding paths the kernel wrote."""
    if isinstance(got, (str, bytes)) and type(got) is type(want) and got != want:
        return want if same_path_seen_by_kernel(got, want) else got
    return got


def exes_inside_chroot(got: list[dict[str, Any]], want: list[dict[str, Any]]
                       ) -> list[dict[str, Any]]:
    """A context's ancestors with each exe passed through inside_chroot against want's."""
    return [dict(g, exe=inside_chroot(g["exe"], w.get("exe"))) if "exe" in g else g
            for g, w in zip(got, want, strict=False)] + got[len(want):]
