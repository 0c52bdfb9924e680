"""Sinks that go away, through the real pipeline: a reader that leaves (`| head`), a disk that
fills up, standard descriptors closed at start, and socket listeners that are not the one
configured (another user's unix socket, another certificate on a TCP port). Whatever is
planted is planted by the unprivileged user nobody, and every test checks that nothing outside
the run's own files changed."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, needs_root, parse_line, wait_for
from helpers import creator
from helpers.creator import create
from pki import Pki, make_pki, needs_openssl
from untouched import Sandbox

pytestmark = needs_root
HELPERS = Path(__file__).resolve().parent / "helpers"
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def new_comm() -> str:
    return creator.new_comm("apg")


class Bg:
    """The pipeline in the background, in the sandbox; stderr read line by line."""

    def __init__(self, sb: Sandbox, *args: str, stdout: Any = subprocess.DEVNULL) -> None:
        self.proc = subprocess.Popen(sb.argv(*args), cwd=sb.cwd, env=sb.env(), stdout=stdout,
                                     stderr=subprocess.PIPE)
        _live.append(self.proc)
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()
        if not self._ready.wait(20) or self.proc.poll() is not None:
            self.proc.kill()
            raise AssertionError(f"pipeline did not become ready: {self.stderr()}")

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))
            if "ready in" in self.lines[-1]:
                self._ready.set()
        self._ready.set()

    def wait(self, timeout: float = 60) -> int:
        """The exit status of a run that must end by itself (a hang fails the test)."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"the run did not end by itself: {self.stderr()}") from None
        self._t.join(5)
        return rc

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.wait()

    def stderr(self) -> str:
        return "\n".join(self.lines)

    def stats(self) -> dict[str, Any]:
        got = [ln for ln in self.lines if ln.startswith("pipeline: final ")]
        if not got:
            raise AssertionError(f"no final statistics: {self.stderr()}")
        return dict(json.loads(got[-1][len("pipeline: final "):]))

    def running(self, *keys: str) -> Any:
        """A figure from the latest periodic statistics (None before the first)."""
        got = [ln for ln in list(self.lines) if ln.startswith("pipeline: stats ")]
        value: Any = json.loads(got[-1][len("pipeline: stats "):]) if got else None
        for k in keys:
            value = None if value is None else value[k]
        return value

    def messages(self) -> list[str]:
        """Lines other than the start-up ones and the statistics."""
        skip = ("pipeline: trigger:", "pipeline: ready in", "pipeline: stats ",
                "pipeline: final ")
        return [ln for ln in self.lines if not ln.startswith(skip)]


_live: list[subprocess.Popen[Any]] = []


@pytest.fixture(autouse=True)
def spawned() -> Iterator[list[subprocess.Popen[Any]]]:
    """Every process a test starts; one a failing test left running is killed after it."""
    yield _live
    for p in _live:
        if p.poll() is None:
            p.kill()
            p.wait()
    _live.clear()


@pytest.fixture
def sb(tmp_path: Path, pin_root: Path) -> Iterator[Sandbox]:
    box = Sandbox(tmp_path, pin_root)
    yield box


def base_args(sb: Sandbox, comm: str) -> list[str]:
    return ["--trigger", "tracepoint", "--filter-comm", comm, "--pin-dir", str(sb.pin_root)]


# -- every sink gone ------------------------------------------------------------------------


def test_head_ends_an_idle_run_exit_0(sb: Sandbox, tmp_path: Path) -> None:
    """`pipeline | head -n 5`: the 20 lines fit in the pipe, head takes 5 and leaves, and no
    event comes after: the run notices without writing, stops, and reports."""
    comm, work = new_comm(), tmp_path / "work"
    work.mkdir()
    sb.allow(work)
    sb.snapshot()
    pl = Bg(sb, *base_args(sb, comm), stdout=subprocess.PIPE)
    head = subprocess.Popen(["head", "-n", "5"], stdin=pl.proc.stdout, stdout=subprocess.PIPE)
    _live.append(head)
    assert pl.proc.stdout is not None
    pl.proc.stdout.close()  # head holds the only read end
    create(comm, work, "h", 20)
    out, _ = head.communicate(timeout=30)
    assert pl.wait() == 0, pl.stderr()
    names = [json.loads(ln)["name"] for ln in out.splitlines()]
    assert names == [f"h-{i:06d}" for i in range(5)]
    final = pl.stats()
    so = final["sinks"]["stdout"]
    # head may leave while the creator is still at work: the run stops then, so it saw
    # between 5 and 20 events, and it accounts for exactly those
    assert final["produced"] == final["read"] and 5 <= final["read"] <= 20, final
    assert so["delivered"] + so["dropped_total"] == final["read"] and so["delivered"] >= 5
    assert so["failed"].startswith("stdout was closed by its reader")
    msgs = pl.messages()
    assert len(msgs) == 2, pl.stderr()
    assert msgs[0].startswith("pipeline: sink stdout: stdout was closed by its reader (")
    assert msgs[1].startswith("pipeline: every sink has failed; stopping")
    sb.check()


def test_head_on_stdout_and_stderr_exit_0(sb: Sandbox, tmp_path: Path,
                                          spawned: list[subprocess.Popen[Any]]) -> None:
    """`pipeline 2>&1 | head -n 3`: the log lines' reader has gone too; nobody is left to
    tell, and the run still ends by itself with 0 (not 120 from a failed flush at exit)."""
    comm, work = new_comm(), tmp_path / "work"
    work.mkdir()
    sb.allow(work)
    sb.snapshot()
    r, w = os.pipe()
    pl = subprocess.Popen(sb.argv(*base_args(sb, comm)), cwd=sb.cwd, env=sb.env(), stdout=w,
                          stderr=w)
    os.close(w)
    head = subprocess.Popen(["head", "-n", "3"], stdin=r, stdout=subprocess.PIPE)
    os.close(r)
    spawned.extend([pl, head])
    # head's output is block-buffered: nothing shows until it leaves. The events created
    # before the run was ready are not seen; create until head has its three lines. A
    # deadline, not a count of rounds: on a busy machine the run takes seconds to load its
    # programs, while a round takes milliseconds.
    deadline = time.monotonic() + 60
    rnd = 0
    while head.poll() is None and time.monotonic() < deadline:
        create(comm, work, f"e{rnd:03d}", 5)
        rnd += 1
    out, _ = head.communicate(timeout=30)
    lines = out.splitlines()
    assert len(lines) == 3 and lines[1].startswith(b"pipeline: ready in"), out
    # the run may become ready in the middle of a round: any of the creator's files
    assert re.fullmatch(r"e\d{3,}-\d{6}", parse_line(lines[2] + b"\n")["name"]), out
    assert pl.wait(60) == 0  # a hang fails here, and the process is killed at teardown
    sb.check()


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "full"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(d)],
                   check=True)
    yield d
    subprocess.run(["umount", "-l", str(d)], check=False)


def test_disk_full_on_the_only_sink_ends_the_run_exit_1(sb: Sandbox, tmp_path: Path,
                                                        small_tmpfs: Path) -> None:
    comm, work = new_comm(), tmp_path / "work"
    work.mkdir()
    out = small_tmpfs / "events.jsonl"
    sb.allow(work, out)
    sb.snapshot()
    pl = Bg(sb, *base_args(sb, comm), "--sink", "jsonl", "--output", str(out))
    create(comm, work, "z", 5000)  # ~1.8 MB of JSON: far more than 256 KiB
    assert pl.wait() == 1, pl.stderr()
    final = pl.stats()
    js = final["sinks"]["jsonl"]
    lines = out.read_bytes().splitlines(keepends=True)
    assert all(ln.endswith(b"\n") for ln in lines)
    assert js["delivered"] == len(lines) > 0
    assert js["delivered"] + js["dropped_total"] == final["read"]
    assert "No space left on device" in js["failed"]
    dropped = final["dropped"]
    assert final["produced"] == final["read"] + sum(dropped.values())
    msgs = pl.messages()
    assert len(msgs) == 2 and msgs[0].startswith("pipeline: sink jsonl: "), pl.stderr()
    assert msgs[1].startswith("pipeline: every sink has failed; stopping")
    sb.check()


# -- standard descriptors closed at start ---------------------------------------------------

SUBCOMMANDS = {
    "run": [],
    "run-jsonl": ["--sink", "jsonl", "--output", "OUT"],
    "help": ["--help"],
    "ds-list": ["ds", "list"],
    "stress": ["stress", "--config", str(ROOT / "configs/stress-hash.toml"), "--ops", "10"],
    "bench": ["bench", "--only", "idle"],
    "burst": ["burst", "--events", "1"],
}


def closed(sb: Sandbox, redirect: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", f'exec "$@" {redirect}', "sh", *sb.argv(*args)],
                          cwd=sb.cwd, env=sb.env(), capture_output=True, text=True, timeout=60)


def fill(args: list[str], sb: Sandbox, tmp_path: Path) -> list[str]:
    args = [str(tmp_path / "out.jsonl") if a == "OUT" else a for a in args]
    if not args or args[0].startswith("--"):  # the pipeline itself
        args = [*args, "--pin-dir", str(sb.pin_root), "--duration", "1"]
    return args


@pytest.mark.parametrize("name", list(SUBCOMMANDS))
def test_closed_stdout_at_start_exit_2(name: str, sb: Sandbox, tmp_path: Path) -> None:
    sb.snapshot()
    res = closed(sb, ">&-", fill(SUBCOMMANDS[name], sb, tmp_path))
    assert res.returncode == 2, (res.returncode, res.stderr)  # not -6 (SIGABRT), not 1
    assert res.stderr.splitlines() == [
        "pipeline: stdout (fd 1) is closed; give it somewhere to write, such as a file, a pipe "
        "or >/dev/null"]
    sb.check()  # the jsonl case: its output was not even created


@pytest.mark.parametrize("name", ["run", "ds-list"])
def test_closed_stderr_at_start_exit_2_and_nothing_on_stdout(name: str, sb: Sandbox,
                                                            tmp_path: Path) -> None:
    sb.snapshot()
    res = closed(sb, "2>&-", fill(SUBCOMMANDS[name], sb, tmp_path))
    assert res.returncode == 2, res.returncode
    assert res.stdout == ""  # no log line may take stderr's place on stdout
    sb.check()


def test_stdout_open_read_only_and_stdin_closed(sb: Sandbox, tmp_path: Path) -> None:
    sb.snapshot()
    res = closed(sb, "1</dev/null", ["ds", "list"])
    assert res.returncode == 2 and res.stderr.splitlines() == [
        "pipeline: stdout (fd 1) is open read-only; give it somewhere to write, such as a "
        "file, a pipe or >/dev/null"]
    res = closed(sb, "<&-", ["ds", "list", "--format", "json"])
    assert res.returncode == 0 and res.stderr == ""
    assert "hash" in [d["name"] for d in json.loads(res.stdout)]
    sb.check()


# -- listeners that are not the one configured -----------------------------------------------


class Listener:
    """tests/helpers/count_listener.py, as root or as nobody, with its files in `d`."""

    def __init__(self, d: Path, name: str, *, unix: Path | None = None, port: int = 0,
                 nobody: bool = False, tls: tuple[Path, Path, Path | None] | None = None
                 ) -> None:
        self.count = d / f"{name}.count"
        self.lines_file = d / f"{name}.lines"
        ready = d / f"{name}.ready"
        self.files = [self.count, self.lines_file, ready, d / f"{name}.err"]
        cmd = ["/usr/bin/python3", str(d / "count_listener.py"), "--count-file",
               str(self.count), "--ready-file", str(ready), "--lines-file", str(self.lines_file)]
        cmd += ["--unix", str(unix)] if unix else ["--port", str(port)]
        if tls:
            cmd += ["--cert", str(tls[0]), "--key", str(tls[1])]
            if tls[2]:
                cmd += ["--client-ca", str(tls[2])]
        with open(d / f"{name}.err", "wb") as err:
            self.proc = subprocess.Popen([*NOBODY, *cmd] if nobody else cmd, stderr=err)
        _live.append(self.proc)
        wait_for(ready.exists, 10, f"listener {name}")

    def stop(self) -> tuple[int, int, list[bytes]]:
        """(connections, bytes received, lines)."""
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(20) == 0
        conns, nbytes, nlines, _ = map(int, self.count.read_text().split())
        lines = self.lines_file.read_bytes().splitlines()
        assert len(lines) == nlines
        return conns, nbytes, lines


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory like /tmp (world-writable, sticky) that the listeners share."""
    d = Path(tempfile.mkdtemp(prefix="ap-plant-"))
    d.chmod(0o1777)
    shutil.copy(HELPERS / "count_listener.py", d / "count_listener.py")
    (d / "count_listener.py").chmod(0o644)
    yield d
    shutil.rmtree(d)


def names(lines: list[bytes]) -> list[str]:
    return [json.loads(ln)["name"] for ln in lines]


def test_unix_listener_of_another_user_refused_at_start(sb: Sandbox, shared: Path) -> None:
    path = shared / "l.sock"
    planted = Listener(shared, "planted", unix=path, nobody=True)
    sb.watched.append(shared)
    sb.allow(*planted.files, path)
    sb.snapshot()
    res = sb.run(*base_args(sb, new_comm()), "--sink", "socket", "--connect", f"unix:{path}",
                 "--duration", "2")
    conns, nbytes, _ = planted.stop()
    assert res.returncode == 2, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"pipeline: cannot connect to unix:{path}: the listener (pid ")
    assert "runs as uid 65534, and peer_uid accepts 0;" in lines[0]
    assert conns <= 1 and nbytes == 0
    sb.check()


def socket_config(tmp_path: Path, connect: str, **extra: Any) -> Path:
    cfg = tmp_path / "socket.toml"
    keys = {"connect": connect, "close_timeout": 0.5, "backoff_initial": 0.02,
            "backoff_max": 0.1, **extra}
    body = "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())
    cfg.write_text("sinks = [\"socket\"]\nstats = 0.1\n[sink.socket]\n" + body)
    return cfg


def replaced_listener(sb: Sandbox, tmp_path: Path, shared: Path, connect: str,
                      real: dict[str, Any], planted: dict[str, Any], **cfg: Any) -> tuple[
                          Bg, list[bytes], tuple[int, int, list[bytes]]]:
    """The real listener takes 100 events and stops; `planted` (nobody) takes its place;
    50 more events come. Returns the run, the real listener's lines and the planted one's
    (connections, bytes, lines)."""
    comm, work = new_comm(), tmp_path / "work"
    work.mkdir()
    config = socket_config(tmp_path, connect, **cfg)
    first = Listener(shared, "real", **real)
    sb.watched.append(shared)
    sb.allow(work, *first.files, shared / "planted.count", shared / "planted.lines",
             shared / "planted.ready", shared / "planted.err", shared / "l.sock")
    sb.snapshot()
    pl = Bg(sb, *base_args(sb, comm), "--config", str(config))
    create(comm, work, "a", 100)
    wait_for(lambda: pl.running("sinks", "socket", "delivered") == 100, 20,
             "the first 100 events delivered")
    _, _, real_lines = first.stop()
    wait_for(lambda: any("closed by the peer" in ln for ln in pl.lines), 10, "the outage")
    second = Listener(shared, "planted", nobody=True, **planted)
    create(comm, work, "b", 50)
    wait_for(lambda: pl.running("read") == 150, 20, "the next 50 events read")
    wait_for(lambda: any("refused the listener" in ln or "reconnected" in ln
                         for ln in pl.lines), 10, "a connection attempt to the planted one")
    assert pl.stop() == 0, pl.stderr()
    return pl, real_lines, second.stop()


def test_unix_listener_replaced_by_another_user_gets_nothing(sb: Sandbox, tmp_path: Path,
                                                            shared: Path) -> None:
    path = shared / "l.sock"
    pl, real, (conns, nbytes, _) = replaced_listener(
        sb, tmp_path, shared, f"unix:{path}", {"unix": path}, {"unix": path})
    assert names(real) == [f"a-{i:06d}" for i in range(100)]
    assert nbytes == 0 and conns >= 1
    final = pl.stats()["sinks"]["socket"]
    assert final == {"delivered": 100, "dropped": {"disconnected": 50}, "dropped_total": 50,
                     "failed": None}
    refused = [ln for ln in pl.lines if "refused the listener" in ln]
    assert len(refused) == 1, pl.stderr()  # one line per outage, not one per attempt
    assert "runs as uid 65534" in refused[0]
    sb.check()


def test_peer_uid_names_the_accepted_user(sb: Sandbox, tmp_path: Path, shared: Path) -> None:
    path = shared / "l.sock"
    comm, work = new_comm(), tmp_path / "work"
    work.mkdir()
    config = socket_config(tmp_path, f"unix:{path}", peer_uid="nobody")
    listener = Listener(shared, "trusted", unix=path, nobody=True)
    sb.watched.append(shared)
    sb.allow(work, *listener.files, path)
    sb.snapshot()
    pl = Bg(sb, *base_args(sb, comm), "--config", str(config))
    create(comm, work, "t", 30)
    wait_for(lambda: pl.running("read") == 30, 20, "30 events read")
    assert pl.stop() == 0, pl.stderr()
    conns, _, lines = listener.stop()
    assert conns == 1 and names(lines) == [f"t-{i:06d}" for i in range(30)]
    assert pl.stats()["sinks"]["socket"]["delivered"] == 30
    sb.check()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def pki(shared: Path) -> Pki:
    # The listeners read their certificates as root or as nobody: a directory they can read.
    d = shared / "pki"
    p = make_pki(d)
    d.chmod(0o755)
    for f in (p.rogue_cert, p.rogue_key):
        os.chown(f, 65534, 65534)
    for f in (p.server_cert, p.ca, p.other_ca):
        f.chmod(0o644)
    return p


@needs_openssl
@pytest.mark.parametrize("tls", [False, True])
def test_tcp_listener_replaced_on_loopback(tls: bool, sb: Sandbox, tmp_path: Path,
                                           shared: Path, pki: Pki) -> None:
    """Documented: on loopback, whoever binds the port after the listener died gets the events
    of a plain TCP sink. With TLS the sink refuses a listener whose certificate does not chain
    to tls_ca, and it gets nothing."""
    port = free_port()
    extra: dict[str, Any] = {}
    real: dict[str, Any] = {"port": port}
    planted: dict[str, Any] = {"port": port}
    if tls:
        extra = {"tls": True, "tls_ca": str(pki.ca), "tls_cert": str(pki.client_cert),
                 "tls_key": str(pki.client_key)}
        real["tls"] = (pki.server_cert, pki.server_key, pki.ca)
        planted["tls"] = (pki.rogue_cert, pki.rogue_key, None)
    pl, real_lines, (_, nbytes, lines) = replaced_listener(
        sb, tmp_path, shared, f"127.0.0.1:{port}", real, planted, **extra)
    assert names(real_lines) == [f"a-{i:06d}" for i in range(100)]
    final = pl.stats()["sinks"]["socket"]
    if tls:
        assert nbytes == 0 and lines == []  # its handshake failed: it never had a connection
        assert final == {"delivered": 100, "dropped": {"disconnected": 50},
                         "dropped_total": 50, "failed": None}
        refused = [ln for ln in pl.lines if "refused the listener" in ln]
        assert len(refused) == 1 and "TLS certificate was refused" in refused[0], pl.stderr()
    else:
        assert names(lines) == [f"b-{i:06d}" for i in range(50)]
        assert final["delivered"] == 150
    sb.check()


@needs_openssl
def test_tls_listener_with_a_certificate_of_another_ca_refused_at_start(
        sb: Sandbox, tmp_path: Path, shared: Path, pki: Pki) -> None:
    port = free_port()
    config = socket_config(tmp_path, f"127.0.0.1:{port}", tls=True, tls_ca=str(pki.ca))
    planted = Listener(shared, "planted", port=port, nobody=True,
                       tls=(pki.rogue_cert, pki.rogue_key, None))
    sb.watched.append(shared)
    sb.allow(*planted.files)
    sb.snapshot()
    res = sb.run(*base_args(sb, new_comm()), "--config", str(config), "--duration", "2")
    conns, nbytes, _ = planted.stop()
    assert res.returncode == 2, res.stderr
    assert res.stderr.splitlines() == [
        f"pipeline: cannot connect to 127.0.0.1:{port}: its TLS certificate was refused: "
        "unable to get local issuer certificate; check tls_ca, tls_server_name and the "
        "listener's certificate"]
    assert conns <= 1 and nbytes == 0
    sb.check()
