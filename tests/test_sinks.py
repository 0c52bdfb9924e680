"""The sinks against real destinations: files (and a tmpfs that fills up), subprocess pipes
read by jq and head, TCP and unix listeners that restart mid-run.

Every test checks the sink invariant with exact numbers:
    delivered + dropped_total == events written, and events received == delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import importlib.metadata
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar, cast

import pytest
from conftest import parse_jsonl

from pipeline.sinks import Batch, Option, Sink, SinkError, available, get_sink_class
from pipeline.sinks.jsonl import JsonlSink
from pipeline.sinks.pathwatch import PathWatch
from pipeline.sinks.socket import SocketSink, parse_connect
from pipeline.sinks.stdout import StdoutSink

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
is_root = os.geteuid() == 0


# -- helpers ---------------------------------------------------------------------------------


def line(seq: int, pad: int = 0) -> bytes:
    return json.dumps({"seq": seq, "path": f"/tmp/f{seq}", "pad": "x" * pad}).encode() + b"\n"


def batches(n: int, per: int, start: int = 0, pad: int = 0) -> list[Batch]:
    out = []
    for b in range(n):
        first = start + b * per
        out.append(Batch(b"".join(line(first + i, pad) for i in range(per)), per))
    return out


def seqs(data: bytes) -> list[int]:
    """The seq of every line; fails on a partial, malformed or not strictly JSON line."""
    return [int(e["seq"]) for e in parse_jsonl(data)]


def sent(bs: list[Batch]) -> int:
    return sum(b.count for b in bs)


def check_invariant(sink: Sink, written: int) -> None:
    assert sink.stats.delivered + sink.stats.dropped_total() == written, sink.stats.as_dict()


def run(coro: Awaitable[T], loop: str = "asyncio") -> T:
    async def main() -> T:
        return await coro

    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
            return r.run(main())
    return asyncio.run(main())


def one_line(e: BaseException) -> str:
    text = str(e)
    assert text and "\n" not in text, repr(text)
    return text


@contextlib.contextmanager
def mounted_tmpfs(options: str) -> Iterator[Path]:
    if not is_root:
        pytest.skip("mounting a tmpfs needs root")
    d = Path(tempfile.mkdtemp(prefix="sinks-tmpfs-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(d)], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)
        d.rmdir()


# -- options and registry --------------------------------------------------------------------


def test_registry_builtins_and_unknown_name() -> None:
    assert {"stdout", "jsonl", "socket"} <= set(available())
    assert get_sink_class("jsonl") is JsonlSink
    with pytest.raises(SinkError) as ei:
        get_sink_class("kafka")
    msg = one_line(ei.value)
    # the package's own plugin (nats) is listed with the built-ins
    assert "'kafka'" in msg and "jsonl, nats, socket, stdout" in msg


class MemorySink(Sink):
    """A plugin as a third party would write one (loaded through an entry point below)."""

    name: ClassVar[str] = "memory"
    options: ClassVar[dict[str, Option]] = {}

    async def start(self) -> None: ...
    async def write(self, batch: Batch) -> None:
        self.stats.delivered += batch.count

    async def close(self) -> None: ...


def fake_entry_points(monkeypatch: pytest.MonkeyPatch, eps: list[tuple[str, str]]) -> None:
    group = "arena_pipeline.sinks"
    found = [importlib.metadata.EntryPoint(name=n, value=v, group=group) for n, v in eps]

    def entry_points(**kw: Any) -> list[importlib.metadata.EntryPoint]:
        assert kw == {"group": group}
        return found

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)


def test_registry_plugins_good_and_broken(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry_points(monkeypatch, [
        ("memory", f"{__name__}:MemorySink"),
        ("broken", "no_such_module_for_sinks:Sink"),
        ("notasink", "collections:OrderedDict"),
        ("stdout", "no_such_module_for_sinks:Shadow"),  # built-ins cannot be taken over
    ])
    assert get_sink_class("memory") is MemorySink
    assert get_sink_class("stdout") is StdoutSink
    with pytest.raises(SinkError) as ei:
        get_sink_class("broken")
    msg = one_line(ei.value)
    assert "'broken'" in msg and "ModuleNotFoundError" in msg
    with pytest.raises(SinkError) as ei:
        get_sink_class("notasink")
    assert "not a Sink subclass" in one_line(ei.value)
    with pytest.raises(SinkError):
        available()
    with pytest.raises(SinkError) as ei:
        get_sink_class("nope")
    assert "broken, jsonl, memory, notasink, socket, stdout" in one_line(ei.value)


@pytest.mark.parametrize(("cls", "raw", "needle"), [
    (JsonlSink, {"output": "-", "rotate_bytes": 10}, "cannot be rotated"),
    (JsonlSink, {"output": "x", "rotate": 5}, "unknown option 'rotate'"),
    (JsonlSink, {"output": "x", "rotate_bytes": "ten"}, "'rotate_bytes' must be an integer"),
    (JsonlSink, {"output": "x", "rotate_bytes": True}, "'rotate_bytes' must be an integer"),
    (JsonlSink, {"output": "x", "rotate_keep": -1}, "'rotate_keep' must be >= 0"),
    (JsonlSink, {"output": "x", "mode": 600}, "'mode' must be permission bits <= 0o777"),
    (JsonlSink, {"output": "x", "mode": "rw"}, "'mode' must be octal"),
    (SocketSink, {"connect": "localhost"}, "'connect' must be"),
    (SocketSink, {"connect": "::1:9000"}, "brackets"),
    (SocketSink, {"connect": "127.0.0.1:99999"}, "port between 1 and 65535"),
    (SocketSink, {"connect": "unix:"}, "socket path"),
    (SocketSink, {"connect": "h:1", "buffer_events": 0}, "'buffer_events' must be >= 1"),
    (SocketSink, {"connect": "h:1", "backoff_initial": 3}, "'backoff_max' (2) is below"),
    (StdoutSink, {"output": "x"}, "unknown option 'output'; known options: none"),
])
def test_bad_options_are_one_line(cls: type[Sink], raw: dict[str, Any], needle: str) -> None:
    with pytest.raises(SinkError) as ei:
        cls.validate_options(raw)
    msg = one_line(ei.value)
    assert needle in msg and msg.startswith(f"sink {cls.name}: "), msg


def test_options_defaults_and_conversions() -> None:
    assert JsonlSink.validate_options({"output": "f"}) == {
        "output": "f", "rotate_bytes": 0, "rotate_keep": 5, "mode": 0o600,
        "allow_shared_dir": False}
    got = JsonlSink.validate_options({"output": "f", "rotate_bytes": "4096", "mode": "0640"})
    assert got["rotate_bytes"] == 4096 and got["mode"] == 0o640
    got = SocketSink.validate_options({"connect": "h:1", "close_timeout": 1})
    assert got["close_timeout"] == 1.0 and isinstance(got["close_timeout"], float)
    assert parse_connect("[::1]:9000").host == "::1"
    assert parse_connect("unix:@name").path == "\0name"


def test_docs_cover_every_option() -> None:
    doc = (ROOT / "docs" / "sinks.md").read_text()
    for name, cls in available().items():
        assert f"`{name}`" in doc
        for opt in cls.options:
            assert f"`{opt}`" in doc, f"docs/sinks.md does not describe {name}.{opt}"


# -- stdout, through real pipes --------------------------------------------------------------

STDOUT_WRITER = r"""
import asyncio, json, sys
from pipeline.sinks.base import Batch
from pipeline.sinks.stdout import StdoutSink

def line(seq):
    return json.dumps({"seq": seq, "path": f"/tmp/f{seq}"}).encode() + b"\n"

async def main(n, per):
    sink = StdoutSink()
    await sink.start()
    for b in range(n):
        await sink.write(Batch(b"".join(line(b * per + i) for i in range(per)), per))
    await sink.close()
    return sink.stats.as_dict()

stats = asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
with open(sys.argv[3], "w") as f:
    json.dump(stats, f)
"""


def stdout_pipeline(tmp_path: Path, n: int, per: int, consumer: list[str]) -> tuple[
        subprocess.Popen[bytes], bytes, bytes, dict[str, Any]]:
    stats_file = tmp_path / "stats.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writer = subprocess.Popen([sys.executable, "-c", STDOUT_WRITER, str(n), str(per),
                               str(stats_file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              cwd=ROOT, env=env)
    assert writer.stdout is not None and writer.stderr is not None
    reader = subprocess.run(consumer, stdin=writer.stdout, capture_output=True, timeout=30,
                            check=True)
    writer.stdout.close()  # only the consumer held the read end
    err = writer.stderr.read()
    assert writer.wait(30) == 0, err
    return writer, reader.stdout, err, json.loads(stats_file.read_text())


@pytest.mark.skipif(shutil.which("jq") is None, reason="needs jq")
def test_stdout_into_jq_exact(tmp_path: Path) -> None:
    _, out, err, stats = stdout_pipeline(tmp_path, 200, 50, ["jq", "-c", "."])
    assert err == b""
    assert stats == {"delivered": 10_000, "dropped": {}, "dropped_total": 0, "failed": None}
    assert seqs(out) == list(range(10_000))  # what jq parsed == delivered, in order


def test_stdout_broken_pipe_counts_and_one_line(tmp_path: Path) -> None:
    # ~4 MB: far more than a pipe holds, so writes go on after head has gone.
    _, out, err, stats = stdout_pipeline(tmp_path, 1000, 60, ["head", "-n", "1"])
    assert seqs(out) == [0]
    lines = err.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pipeline: sink stdout: "), err
    assert "broken pipe" in lines[0] and b"Traceback" not in err
    assert stats["failed"] and stats["delivered"] >= 1
    assert stats["dropped"]["write_failed"] > 0
    assert stats["delivered"] + stats["dropped_total"] == 60_000


# -- jsonl ------------------------------------------------------------------------------------


async def write_all(sink: Sink, bs: list[Batch], start: bool = True, close: bool = True) -> None:
    if start:
        await sink.start()
    for b in bs:
        await sink.write(b)
    if close:
        await sink.close()


def test_jsonl_appends_and_keeps_existing(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    out.write_bytes(line(-2) + line(-1))
    bs = batches(30, 17)
    sink = JsonlSink(output=str(out))
    run(write_all(sink, bs))
    assert sink.stats.as_dict() == {"delivered": 510, "dropped": {}, "dropped_total": 0,
                                    "failed": None}
    assert seqs(out.read_bytes()) == [-2, -1, *range(510)]


def test_jsonl_mode_default_enforced_and_configurable(tmp_path: Path) -> None:
    fresh, old, custom = tmp_path / "fresh", tmp_path / "old", tmp_path / "custom"
    old.write_bytes(b"")
    old.chmod(0o644)
    prev = os.umask(0o077)  # the configured mode must win over the umask too
    try:
        for path, mode in ((fresh, None), (old, None), (custom, "640")):
            opts: dict[str, Any] = {"output": str(path)}
            if mode:
                opts["mode"] = mode
            sink = JsonlSink(**opts)
            run(write_all(sink, batches(2, 3)))
            assert sink.stats.delivered == 6
    finally:
        os.umask(prev)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    assert stat.S_IMODE(old.stat().st_mode) == 0o600
    assert stat.S_IMODE(custom.stat().st_mode) == 0o640


def expected_files(sizes: list[int], limit: int) -> list[int]:
    """Bytes per file, oldest first, if batches are never split and files rotate before `limit`."""
    files = [0]
    for size in sizes:
        if files[-1] and files[-1] + size > limit:
            files.append(0)
        files[-1] += size
    return files


def rotated(out: Path) -> list[Path]:
    """PATH.N .. PATH.1, PATH: oldest first."""
    olds = sorted(out.parent.glob(out.name + ".*"), key=lambda p: -int(p.suffix[1:]))
    return [*olds, out]


def test_jsonl_rotation_sizes_and_every_event_once(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    bs = [*batches(40, 7), *batches(1, 80, start=280), *batches(20, 3, start=360)]
    limit = 2000
    assert len(bs[40].data) > limit  # an oversized batch goes alone into a file
    sink = JsonlSink(output=str(out), rotate_bytes=limit, rotate_keep=50)
    run(write_all(sink, bs))
    assert sink.stats.as_dict()["delivered"] == 420 and sink.stats.dropped_total() == 0
    files = rotated(out)
    want = expected_files([len(b.data) for b in bs], limit)
    assert [f.stat().st_size for f in files] == want
    assert len(want) > 5
    everything = b"".join(f.read_bytes() for f in files)
    assert seqs(everything) == list(range(420))
    starts = {b.data.splitlines()[0] for b in bs}
    for f in files:  # each file begins with a batch: none was split
        assert f.read_bytes().splitlines()[0] in starts


def test_jsonl_rotation_keeps_only_rotate_keep(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    bs = batches(60, 10)
    sink = JsonlSink(output=str(out), rotate_bytes=1500, rotate_keep=2)
    run(write_all(sink, bs))
    assert sink.stats.delivered == 600 and sink.stats.dropped_total() == 0
    files = rotated(out)
    assert [f.name for f in files] == ["events.jsonl.2", "events.jsonl.1", "events.jsonl"]
    want = expected_files([len(b.data) for b in bs], 1500)
    assert [f.stat().st_size for f in files] == want[-3:]
    kept = seqs(b"".join(f.read_bytes() for f in files))
    assert kept == list(range(600 - len(kept), 600))  # the newest events, each once, in order


def test_jsonl_rotate_keep_zero_discards(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    sink = JsonlSink(output=str(out), rotate_bytes=1000, rotate_keep=0)
    run(write_all(sink, batches(20, 10)))
    assert sink.stats.delivered == 200
    assert [p.name for p in tmp_path.iterdir()] == ["events.jsonl"]
    assert out.stat().st_size <= 1000


def test_jsonl_follows_a_removed_or_renamed_path(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    moved = tmp_path / "moved.jsonl"

    async def scenario(sink: JsonlSink) -> None:
        await write_all(sink, batches(5, 4), close=False)
        out.rename(moved)  # logrotate's move-and-create
        await write_all(sink, batches(5, 4, start=20), start=False, close=False)
        out.unlink()  # an operator deletes the file
        await write_all(sink, batches(5, 4, start=40), start=False, close=False)
        other.write_bytes(b"")
        other.rename(out)  # another file is moved over the path
        await write_all(sink, batches(5, 4, start=60), start=False)

    other = tmp_path / "other.jsonl"
    sink = JsonlSink(output=str(out))
    run(scenario(sink))
    assert sink.stats.delivered == 80 and sink.stats.dropped_total() == 0
    assert seqs(moved.read_bytes()) == list(range(20))
    assert seqs(out.read_bytes()) == list(range(60, 80))
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_pathwatch_reports_what_detaches_a_file_and_not_writes(tmp_path: Path) -> None:
    path = tmp_path / "f"
    w = PathWatch()
    try:
        with open(path, "ab", buffering=0) as f:
            w.watch(f.fileno())
            assert w.active, "inotify should work on this machine"
            assert not w.changed()
            f.write(b"x" * 10000)  # the sink's own writes must not count as changes
            assert not w.changed()
            path.rename(tmp_path / "g")
            assert w.changed() and not w.changed()  # reported once
            (tmp_path / "g").unlink()
            assert w.changed()
        path.write_bytes(b"")
        with open(path, "ab", buffering=0) as f2:
            w.watch(f2.fileno())
            w.changed()  # events of the old file, if still queued
            (tmp_path / "h").write_bytes(b"")
            (tmp_path / "h").rename(path)  # replaced: the open file loses its last link
            assert w.changed()
    finally:
        w.close()
    assert PathWatch().changed() is True  # nothing watched: always check


def test_jsonl_unwritable_output_is_one_line(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    cases = [(tmp_path / "missing" / "e.jsonl", "No such file or directory"),
             (tmp_path, "it is a directory; output must name a file"),
             (fifo, "it is a FIFO, not a regular file; use the stdout sink"),
             (Path("/dev/null"), "not a regular file; use the stdout sink")]
    for path, needle in cases:
        with pytest.raises(SinkError) as ei:
            run(JsonlSink(output=str(path)).start())
        msg = one_line(ei.value)
        assert str(path) in msg and needle in msg, msg


def test_jsonl_read_only_filesystem(tmp_path: Path) -> None:
    with mounted_tmpfs("ro,size=64k") as ro:
        with pytest.raises(SinkError) as ei:
            run(JsonlSink(output=str(ro / "e.jsonl")).start())
        assert "Read-only file system" in one_line(ei.value)


def test_jsonl_disk_full_mid_run(tmp_path: Path) -> None:
    with mounted_tmpfs("size=64k,mode=0700") as full:
        out = full / "events.jsonl"
        bs = batches(120, 20, pad=7)  # ~1 KiB batches, not a divisor of the page size
        reports: list[str] = []
        sink = JsonlSink(output=str(out))
        sink.reporter = reports.append
        run(write_all(sink, bs))
        data = out.read_bytes()
    delivered = sink.stats.delivered
    assert 0 < delivered < sent(bs)
    assert sink.stats.dropped == {"write_failed": sent(bs) - delivered}
    assert seqs(data) == list(range(delivered))  # whole lines only, nothing after the hole
    assert len(data) == sum(len(b.data) for b in bs[: delivered // 20])
    assert sink.stats.failed and "No space left on device" in sink.stats.failed
    assert len(reports) == 1 and reports[0].startswith("pipeline: sink jsonl: write to ")
    assert "rolled back" in reports[0]


# -- socket -----------------------------------------------------------------------------------


class _Conn(asyncio.BufferedProtocol):
    """One accepted connection: records every whole line the moment it is read from the socket
    (no user-space buffer that an abort could throw away), 4 KiB per read."""

    def __init__(self, owner: Listener) -> None:
        self.owner = owner
        self.buf = bytearray(4096)
        self.tail = b""
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.owner.conns.append(self)

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        data = self.tail + bytes(self.buf[:nbytes])
        cut = data.rfind(b"\n") + 1
        self.owner.data.append(data[:cut])
        self.tail = data[cut:]
        if self.owner.pause and self.transport is not None:
            # A slow reader: data piles up in the kernel and in the sink.
            self.transport.pause_reading()
            asyncio.get_running_loop().call_later(self.owner.pause, self._resume)

    def _resume(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def eof_received(self) -> bool:
        self.owner.partial += bool(self.tail)
        return False  # read to EOF: now close

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class Listener:
    """A JSON-lines listener started by the test. stop() is graceful: stop accepting, FIN,
    read each connection to EOF, close. abort() dies abruptly."""

    def __init__(self, unix: Path | None = None, port: int = 0, pause: float = 0.0) -> None:
        self.unix, self.port, self.pause = unix, port, pause
        self.data: list[bytes] = []
        self.partial = 0
        self.conns: list[_Conn] = []
        self._server: asyncio.AbstractServer | None = None

    @property
    def target(self) -> str:
        return f"unix:{self.unix}" if self.unix else f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.unix:
            self._server = await loop.create_unix_server(lambda: _Conn(self), str(self.unix))
        else:
            self._server = await loop.create_server(lambda: _Conn(self), "127.0.0.1", self.port)
            self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for c in self.conns:
            if c.transport is not None and not c.transport.is_closing():
                c.transport.write_eof()
        if self.conns:
            await asyncio.wait([c.closed for c in self.conns], timeout=10)
        assert all(c.closed.done() for c in self.conns)

    def stall(self) -> None:
        """Stop accepting and reading, then send FIN: a peer that closes badly."""
        assert self._server is not None
        self._server.close()
        for c in self.conns:
            assert c.transport is not None
            c.transport.pause_reading()
            c.transport.write_eof()

    async def abort(self) -> None:
        """Die abruptly: whatever the kernel holds for us unread is thrown away."""
        assert self._server is not None
        self._server.close()
        for c in self.conns:
            if c.transport is not None:
                c.transport.abort()

    def seqs(self) -> list[int]:
        return seqs(b"".join(self.data))


def listener(kind: str, tmp_path: Path, **kw: Any) -> Listener:
    return Listener(unix=tmp_path / "l.sock", **kw) if kind == "unix" else Listener(**kw)


async def wait_until(pred: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


FAST = {"backoff_initial": 0.005, "backoff_max": 0.02}
# turns a close() that never returns into a failure; far above any close_timeout used here
CLOSE_GUARD_S = 60.0


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_socket_listener_restarted_gracefully_exact(kind: str, loop: str, tmp_path: Path) -> None:
    bs = batches(300, 40, pad=40)  # ~4 KiB batches, 12 000 events

    async def scenario() -> tuple[SocketSink, Listener, Listener]:
        first = listener(kind, tmp_path, pause=0.002)  # slower than the writer: a backlog
        await first.start()
        second = listener(kind, tmp_path, port=first.port)
        sink = SocketSink(connect=first.target, **FAST)
        await sink.start()
        stopping = None
        for i, b in enumerate(bs):
            await sink.write(b)
            await asyncio.sleep(0.0005)
            if i == 100:  # graceful stop while batches are in flight
                stopping = asyncio.ensure_future(first.stop())
            if i == 200:
                assert stopping is not None
                await stopping
                await second.start()
        await sink.close()
        await second.stop()
        return sink, first, second

    sink, first, second = run(scenario(), loop)
    got_first, got_second = first.seqs(), second.seqs()
    assert got_first and got_second
    assert first.partial == second.partial == 0
    assert sink.stats.as_dict() == {"delivered": 12_000, "dropped": {}, "dropped_total": 0,
                                    "failed": None}
    assert sorted(got_first + got_second) == list(range(12_000))  # each received exactly once


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_socket_buffer_overflow_while_listener_down(kind: str, tmp_path: Path) -> None:
    reports: list[str] = []

    async def scenario() -> tuple[SocketSink, Listener, Listener]:
        first = listener(kind, tmp_path)
        await first.start()
        second = listener(kind, tmp_path, port=first.port)
        sink = SocketSink(connect=first.target, buffer_events=1000, **FAST)
        sink.reporter = reports.append
        await sink.start()
        for b in batches(10, 50):
            await sink.write(b)
        await wait_until(lambda: sink.stats.delivered == 500, "the first 500 events")
        await first.stop()
        await wait_until(lambda: len(reports) == 1, "the disconnection report")
        for b in batches(30, 50, start=500):  # 1500 events, 1000 fit
            await sink.write(b)
        await asyncio.sleep(0.1)  # several refused reconnections
        assert sink.stats.delivered == 500
        await second.start()
        await wait_until(lambda: sink.stats.delivered == 1500, "the buffered events")
        for b in batches(4, 50, start=2000):
            await sink.write(b)
        await sink.close()
        await second.stop()
        return sink, first, second

    sink, first, second = run(scenario())
    assert sink.stats.as_dict() == {"delivered": 1700, "dropped": {"buffer_overflow": 500},
                                    "dropped_total": 500, "failed": None}
    # The oldest events were kept: the 20 batches that fit, then the ones after the outage.
    assert first.seqs() == list(range(500))
    assert second.seqs() == [*range(500, 1500), *range(2000, 2200)]
    assert reports[0].startswith("pipeline: sink socket: connection to ")
    assert "closed by the peer" in reports[0]
    assert reports[1].startswith("pipeline: sink socket: reconnected to ")


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_socket_unreachable_at_start(kind: str, tmp_path: Path) -> None:
    if kind == "tcp":
        with socket.socket() as s:  # a port that was just free: nobody listens there
            s.bind(("127.0.0.1", 0))
            target = f"127.0.0.1:{s.getsockname()[1]}"
        needle = "Connection refused"
    else:
        target = f"unix:{tmp_path / 'nobody.sock'}"
        needle = "No such file or directory"
    with pytest.raises(SinkError) as ei:
        run(SocketSink(connect=target).start())
    msg = one_line(ei.value)
    assert msg == f"cannot connect to {target}: {needle}; start the listener or fix --connect"


def test_socket_close_while_down_is_bounded_and_counted(tmp_path: Path) -> None:
    async def scenario() -> tuple[SocketSink, Listener]:
        first = listener("unix", tmp_path)
        await first.start()
        sink = SocketSink(connect=first.target, close_timeout=0.3, **FAST)
        sink.reporter = lambda _: None
        await sink.start()
        await write_all(sink, batches(5, 10), start=False, close=False)
        await wait_until(lambda: sink.stats.delivered == 50, "delivery")
        await first.stop()
        await write_all(sink, batches(7, 10, start=50), start=False, close=False)
        # close_timeout bounds close() with nobody listening: it returns and counts what it
        # holds; the guard only turns a close that never returns into a failure, not a hang
        await asyncio.wait_for(sink.close(), CLOSE_GUARD_S)
        return sink, first

    sink, first = run(scenario())
    assert sink.stats.as_dict() == {"delivered": 50, "dropped": {"disconnected": 70},
                                    "dropped_total": 70, "failed": None}
    assert first.seqs() == list(range(50))


def test_socket_unix_peer_dies_abruptly_nothing_lost(tmp_path: Path) -> None:
    """Documented behaviour for an abrupt death: at least once. Every event arrives (resent
    if not known to be read), `delivered` never exceeds what was received."""
    bs = batches(200, 40, pad=40)

    async def scenario() -> tuple[SocketSink, Listener, Listener]:
        first = listener("unix", tmp_path, pause=0.001)
        await first.start()
        second = listener("unix", tmp_path)
        sink = SocketSink(connect=first.target, **FAST)
        sink.reporter = lambda _: None
        await sink.start()
        for i, b in enumerate(bs):
            await sink.write(b)
            await asyncio.sleep(0.0005)
            if i == 80:
                await first.abort()
            if i == 120:
                await second.start()
        await sink.close()
        await second.stop()
        return sink, first, second

    sink, first, second = run(scenario())
    received = first.seqs() + second.seqs()
    assert sink.stats.as_dict()["delivered"] == 8000 and sink.stats.dropped_total() == 0
    assert set(received) == set(range(8000))
    assert len(received) >= sink.stats.delivered



def test_socket_peer_that_stops_reading_after_fin_is_bounded(tmp_path: Path) -> None:
    """A peer sends FIN mid-batch and never reads again: after close_timeout the sink gives up
    on it and resends what it had not read to the next listener (unix: nothing is lost or
    duplicated, since the stalled peer never reads those bytes)."""
    bs = batches(150, 40, pad=200)  # ~10 KiB batches: the socket buffer fills up quickly

    reports: list[str] = []

    async def scenario() -> tuple[SocketSink, Listener, Listener]:
        first = listener("unix", tmp_path, pause=0.001)
        await first.start()
        second = listener("unix", tmp_path)
        sink = SocketSink(connect=first.target, close_timeout=0.3, **FAST)
        sink.reporter = reports.append
        await sink.start()
        await write_all(sink, bs[:10], start=False, close=False)
        await wait_until(lambda: sink.stats.delivered == 400, "the first batches")
        for c in first.conns:
            assert c.transport is not None
            c.transport.pause_reading()
        await write_all(sink, bs[10:], start=False, close=False)
        await asyncio.sleep(0.05)  # the sender is now blocked: the peer's queue is full
        first.stall()
        await second.start()
        await wait_until(lambda: sink.stats.delivered == 6000, "everything", timeout=30)
        await sink.close()
        await second.stop()
        await first.abort()
        return sink, first, second

    sink, first, second = run(scenario())
    # the stalled peer was given up on (after close_timeout) as a timed-out link, then the
    # sink reconnected: it did not wait for it forever
    lost = f"lost ({os.strerror(errno.ETIMEDOUT)})"
    assert len([r for r in reports if lost in r]) == 1, reports
    assert reports[-1].startswith("pipeline: sink socket: reconnected to "), reports
    assert sink.stats.as_dict() == {"delivered": 6000, "dropped": {}, "dropped_total": 0,
                                    "failed": None}
    assert second.seqs()
    assert sorted(first.seqs() + second.seqs()) == list(range(6000))
