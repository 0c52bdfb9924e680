"""Sinks under the real pipeline: a socket listener restarted mid-run, and a
JSONL sink on a filesystem that fills up while another sink goes on."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    Reap,
    StartPipeline,
    count_lines,
    create_files,
    needs_root,
    read_jsonl,
    wait_for,
)

pytestmark = needs_root
HERE = Path(__file__).resolve().parent

class Listener:
    def __init__(self, tmp: Path, name: str, port: int, reap: Reap) -> None:
        self.count_file = tmp / f"{name}.count"
        ready = tmp / f"{name}.ready"
        script = HERE / "helpers" / "count_listener.py"
        self.proc = reap(subprocess.Popen([sys.executable, str(script), "--port", str(port),
                                           "--count-file", str(self.count_file),
                                           "--ready-file", str(ready)]))
        wait_for(ready.exists, 10, "the listener")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(20) == 0
        _, _, lines, partial = map(int, self.count_file.read_text().split())
        assert partial == 0, "a connection ended inside a line"
        return lines


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_socket_listener_restarted_mid_run(tmp_path: Path, pin_root: Path,
                                           pipeline_proc: StartPipeline, reap: Reap) -> None:
    port = free_port()
    work = tmp_path / "w"
    work.mkdir()
    ref = tmp_path / "ref.jsonl"
    first = Listener(tmp_path, "first", port, reap)
    pl = pipeline_proc("--sink", "socket,jsonl", "--connect", f"127.0.0.1:{port}",
                       "--output", str(ref), "--pin-dir", str(pin_root))
    create_files(work, "a", 3000)
    received = first.stop()
    create_files(work, "b", 2000)  # while nobody listens: buffered
    second = Listener(tmp_path, "second", port, reap)
    create_files(work, "c", 3000)
    wait_for(lambda: count_lines(ref) >= 8000, 20, "events")
    assert pl.stop() == 0, pl.stderr()
    received += second.stop()
    final = pl.final()
    sock: dict[str, Any] = final["sinks"]["socket"]
    dropped = sum(sock["dropped"].values())
    assert received == sock["delivered"], (received, sock)
    assert sock["delivered"] + dropped == final["read"]
    assert final["sinks"]["jsonl"]["delivered"] == final["read"] == len(read_jsonl(ref))
    assert final["produced"] == final["read"]
    assert received >= 8000 - dropped


@pytest.fixture
def small_tmpfs() -> Any:
    d = Path(tempfile.mkdtemp(prefix="ap-full-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(d)],
                   check=True)
    yield d
    subprocess.run(["umount", "-l", str(d)], check=False)
    os.rmdir(d)


def test_full_filesystem_fails_one_sink_only(tmp_path: Path, pin_root: Path, small_tmpfs: Path,
                                             pipeline_proc: StartPipeline) -> None:
    work = tmp_path / "w"
    work.mkdir()
    full = small_tmpfs / "events.jsonl"
    stdout_file = tmp_path / "stdout.jsonl"
    with open(stdout_file, "wb") as so:
        pl = pipeline_proc("--sink", "jsonl,stdout", "--output", str(full),
                           "--pin-dir", str(pin_root), stdout=so)
        create_files(work, "z", 5000)  # ~1.8 MB of JSON: far more than 256 KiB
        wait_for(lambda: count_lines(stdout_file) >= 5000, 20, "stdout events")
        assert pl.stop() == 0, pl.stderr()
    final = pl.final()
    js = final["sinks"]["jsonl"]
    assert js["failed"], js
    assert js["delivered"] + sum(js["dropped"].values()) == final["read"]
    assert js["delivered"] == len(read_jsonl(full))  # whole lines only
    assert final["sinks"]["stdout"]["delivered"] == final["read"] == len(read_jsonl(stdout_file))
    reports = [ln for ln in pl.lines if "sink jsonl" in ln]
    assert len(reports) == 1, pl.stderr()
