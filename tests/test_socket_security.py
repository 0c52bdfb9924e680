"""The socket sink's peer checks, in process against real listeners on loopback: TLS with a
client certificate (exact delivery under both event loops), the checks on the files it reads
as root (planted by nobody), and the options that would only look like protection."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pki import Pki, make_pki, needs_openssl

from pipeline.sinks import Batch, SinkError
from pipeline.sinks.socket import SocketSink

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
is_root = os.geteuid() == 0


def batch(first: int, n: int) -> Batch:
    lines = [json.dumps({"seq": first + i, "pad": "x" * 60}).encode() + b"\n" for i in range(n)]
    return Batch(b"".join(lines), n)


def run(coro: Any, loop: str) -> Any:
    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
            return r.run(coro)
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    d = Path(tempfile.mkdtemp(prefix="ap-pki-"))
    yield make_pki(d / "pki")
    shutil.rmtree(d)


def server_context(pki: Pki) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(pki.ca)
    return ctx


def tls_options(pki: Pki, port: int) -> dict[str, Any]:
    return {"connect": f"127.0.0.1:{port}", "tls": True, "tls_ca": str(pki.ca),
            "tls_cert": str(pki.client_cert), "tls_key": str(pki.client_key)}


@needs_openssl
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_tls_with_client_certificate_every_event_once(loop: str, pki: Pki) -> None:
    received: list[bytes] = []
    peers: list[Any] = []

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        peers.append(w.get_extra_info("peercert"))
        while chunk := await r.read(4096):
            received.append(chunk)
        w.close()

    async def scenario() -> SocketSink:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_context(pki))
        port = server.sockets[0].getsockname()[1]
        sink = SocketSink(**tls_options(pki, port))
        await sink.start()
        for b in range(300):
            await sink.write(batch(b * 40, 40))
            if b % 50 == 0:
                await asyncio.sleep(0.001)
        await sink.close()
        server.close()
        await server.wait_closed()
        return sink

    before = snapshot(pki.ca.parent)
    sink = run(scenario(), loop)
    assert snapshot(pki.ca.parent) == before  # the files it read, read only
    data = b"".join(received)
    assert data.endswith(b"\n")
    assert [json.loads(ln)["seq"] for ln in data.splitlines()] == list(range(12_000))
    assert sink.stats.as_dict() == {"delivered": 12_000, "dropped": {}, "dropped_total": 0,
                                    "failed": None}
    # the listener saw the client certificate: mutual authentication took place
    assert len(peers) == 1 and dict(x[0] for x in peers[0]["subject"]) == {"commonName": "client"}


@needs_openssl
def test_tls_server_name_is_checked(pki: Pki) -> None:
    async def scenario() -> None:
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0,
                                            ssl=server_context(pki))
        port = server.sockets[0].getsockname()[1]
        try:
            await SocketSink(**tls_options(pki, port), tls_server_name="db.example").start()
        finally:
            server.close()

    before = snapshot(pki.ca.parent)
    with pytest.raises(SinkError) as ei:
        run(scenario(), "asyncio")
    msg = str(ei.value)
    assert "\n" not in msg and "its TLS certificate was refused: Hostname mismatch" in msg, msg
    assert snapshot(pki.ca.parent) == before


def snapshot(d: Path) -> dict[str, tuple[int, int, str]]:
    return {p.name: (p.lstat().st_mode, p.lstat().st_uid,
                     "" if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest())
            for p in d.iterdir()}


@needs_openssl
@pytest.mark.skipif(not is_root, reason="plants files as nobody: needs root")
@pytest.mark.parametrize("case", ["planted_by_nobody", "symlink", "group_writable",
                                  "key_readable_by_others", "missing"])
def test_tls_files_a_user_could_plant_are_refused(case: str, pki: Pki) -> None:
    d = Path(tempfile.mkdtemp(prefix="ap-tlsfiles-"))
    try:
        d.chmod(0o1777)
        opts = tls_options(pki, 9)
        ca = d / "ca.pem"
        if case == "planted_by_nobody":
            shutil.copy(pki.ca, d / "source.pem")
            (d / "source.pem").chmod(0o644)
            subprocess.run([*NOBODY, "cp", str(d / "source.pem"), str(ca)], check=True)
            needle = "belongs to uid 65534; it must belong to root"
        elif case == "symlink":
            ca.symlink_to(pki.ca)
            needle = "is a symbolic link; give the path of the file itself"
        elif case == "group_writable":
            shutil.copy(pki.ca, ca)
            ca.chmod(0o664)
            needle = "is writable by other users (mode 0o664); chmod go-w it"
        elif case == "key_readable_by_others":
            shutil.copy(pki.ca, ca)
            shutil.copy(pki.client_key, d / "client.key")
            (d / "client.key").chmod(0o644)
            opts["tls_key"] = str(d / "client.key")
            needle = "is readable by other users (mode 0o644); chmod 600 it"
        else:
            needle = "No such file or directory; fix the path"
        opts["tls_ca"] = str(ca)
        before = snapshot(d)
        with pytest.raises(SinkError) as ei:
            run(SocketSink(**opts).start(), "asyncio")
        msg = str(ei.value)
        assert "\n" not in msg and msg.startswith("sink socket: option '") and needle in msg, msg
        assert snapshot(d) == before
    finally:
        shutil.rmtree(d)


@pytest.mark.parametrize(("opts", "needle"), [
    ({"connect": "unix:/run/x.sock", "tls": True}, "'tls' is for TCP listeners"),
    ({"connect": "127.0.0.1:9", "peer_uid": 0}, "'peer_uid' applies to unix sockets only"),
    ({"connect": "127.0.0.1:9", "tls_ca": "/etc/ca.pem"}, "'tls_ca' has no effect without tls"),
    ({"connect": "h:9", "tls": True, "tls_key": "k.pem"}, "'tls_key' needs 'tls_cert'"),
    ({"connect": "unix:/x", "peer_uid": "no-such-user-here"},
     "'peer_uid' must be a uid or the name of an existing user"),
    ({"connect": "unix:/x", "peer_uid": -1}, "'peer_uid' must be a uid from 0 to 4294967294"),
    ({"connect": "unix:/x", "peer_uid": True}, "'peer_uid' must be a uid or a user name"),
])
def test_peer_options_that_would_only_look_like_protection(opts: dict[str, Any],
                                                           needle: str) -> None:
    with pytest.raises(SinkError) as ei:
        SocketSink.validate_options(opts)
    msg = str(ei.value)
    assert "\n" not in msg and needle in msg, msg


def test_peer_uid_accepts_names_and_numbers() -> None:
    assert SocketSink.validate_options({"connect": "unix:/x", "peer_uid": "nobody"})[
        "peer_uid"] == 65534
    assert SocketSink.validate_options({"connect": "unix:/x", "peer_uid": "1000"})[
        "peer_uid"] == 1000
    assert SocketSink(connect="unix:/x").accepted_uids == {0, os.geteuid()}
    assert SocketSink(connect="unix:/x", peer_uid=65534).accepted_uids == {0, 65534}
