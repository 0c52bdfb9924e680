"""Shared helpers: run the real pipeline as a subprocess and read its stderr."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs: needs root")


class PipelineProc:
    """`python -m pipeline ARGS` in the background, ready once it says so."""

    def __init__(self, *args: str, stdout: int | IO[bytes] | None = subprocess.DEVNULL,
                 wait_ready: bool = True, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", *args], cwd=ROOT, stdout=stdout,
            stderr=subprocess.PIPE, env=env)
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._t = threading.Thread(target=self._read_stderr, daemon=True)
        self._t.start()
        if wait_ready:
            self.wait_ready()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            if "ready in" in line:
                self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout: float = 15.0) -> None:
        if not self._ready.wait(timeout) or self.proc.poll() is not None:
            self.proc.kill()
            raise AssertionError(f"pipeline did not become ready: {self.stderr()}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"pipeline did not stop: {self.stderr()}") from None
        self._t.join(5)
        return rc

    def wait(self, timeout: float = 60.0) -> int:
        rc = self.proc.wait(timeout)
        self._t.join(5)
        return rc

    def stderr(self) -> str:
        return "\n".join(self.lines)

    def final(self) -> dict[str, Any]:
        for line in self.lines:
            if line.startswith("pipeline: final "):
                return dict(json.loads(line[len("pipeline: final "):]))
        raise AssertionError(f"no final statistics in stderr: {self.stderr()}")


def run_pipeline(*args: str, timeout: float = 30.0,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    with open(path, "rb") as f:
        for line in f:
            assert line.endswith(b"\n"), f"partial line in {path}: {line[:80]!r}"
            out.append(json.loads(line))
    return out


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
