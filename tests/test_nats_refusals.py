"""The nats sink and consume refuse what cannot work with one line and exit 2: bad URLs and
subjects, an unreachable server, a server without JetStream, a TLS server whose CA, client
certificate or token the client lacks. With the right ones, events get through TLS."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, StartPipeline, assert_one_line, needs_root, run_pipeline, wait_for
from helpers.nats_fleet import consume, start_host, unique, write_config
from helpers.nats_servers import NatsServer, free_ports, needs_nats_server
from pki import Pki, make_pki, needs_openssl

pytestmark = [needs_root, needs_nats_server]


@pytest.fixture
def servers() -> Iterator[list[NatsServer]]:
    started: list[NatsServer] = []
    yield started
    for s in started:
        s.stop()


def started(servers: list[NatsServer], s: NatsServer) -> NatsServer:
    servers.append(s.start())
    s.wait_healthy()
    return s


def run_consume(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", "consume", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


LOCAL = "nats://127.0.0.1:4222"


@pytest.mark.parametrize(("flags", "words"), [
    (["--nats-url", "http://127.0.0.1:4222"], ["'url'", "nats://"]),
    (["--nats-url", "nats://127.0.0.1:99999"], ["'url'", "port"]),
    (["--nats-url", "nats://u:secret@127.0.0.1:4222"], ["'url'", "credentials"]),
    (["--nats-url", LOCAL + ","], ["'url'", "empty entry"]),
    (["--nats-url", LOCAL, "--subject", "arena.*"], ["'subject'", "wildcards"]),
    (["--nats-url", LOCAL, "--subject", "arena events"], ["'subject'", "' '"]),
    (["--nats-url", LOCAL, "--subject", "arena..x"], ["'subject'", "empty token"]),
    (["--nats-url", LOCAL, "--subject", "a.{hostname}"], ["'subject'", "{host}"]),
    (["--nats-url", LOCAL, "--nats-host-id", "a.b"], ["'host_id'"]),
])
def test_bad_url_or_subject(flags: list[str], words: list[str]) -> None:
    res = run_pipeline("--sink", "nats", *flags, "--duration", "0.1")
    assert_one_line(res, "sink nats", *words)


def test_unreachable_server() -> None:
    port = free_ports(1)[0]
    res = run_pipeline("--sink", "nats", "--nats-url", f"nats://127.0.0.1:{port}",
                       "--duration", "0.1")
    assert_one_line(res, f"cannot connect to nats://127.0.0.1:{port}", "Connection refused",
                    "start nats-server")
    res2 = run_consume("--nats-url", f"nats://127.0.0.1:{port}", "--idle-exit", "0.1")
    assert_one_line(res2, "consume: cannot connect", "Connection refused")
    assert res2.stdout == ""


def test_consume_bad_flags() -> None:
    assert_one_line(run_consume("--subject", "a.>"), "--nats-url")
    assert_one_line(run_consume("--nats-url", "nats://127.0.0.1:4222", "--subject", "a.>.b"),
                    "--subject", "wildcards")
    assert_one_line(run_consume("--nats-url", "nats://127.0.0.1:4222", "--durable", "a.b"),
                    "--durable")


def test_server_without_jetstream(tmp_path: Path, servers: list[NatsServer]) -> None:
    srv = started(servers, NatsServer(tmp_path, "nojs", jetstream=False))
    res = run_pipeline("--sink", "nats", "--nats-url", srv.url, "--duration", "0.1")
    assert_one_line(res, "JetStream is not enabled", "-js")


def test_stream_subjects_not_covering(tmp_path: Path, servers: list[NatsServer]) -> None:
    srv = started(servers, NatsServer(tmp_path, "s"))
    cfg = write_config(tmp_path / "c.toml", {"stream": unique("R_"),
                                             "stream_subjects": "other.>"})
    res = run_pipeline("--config", str(cfg), "--sink", "nats", "--nats-url", srv.url,
                       "--duration", "0.1")
    assert_one_line(res, "stream_subjects", "does not cover")
    cfg2 = write_config(tmp_path / "c2.toml", {"stream": unique("R_"), "create_stream": False})
    res2 = run_pipeline("--config", str(cfg2), "--sink", "nats", "--nats-url", srv.url,
                        "--duration", "0.1")
    assert_one_line(res2, "does not exist", "create_stream")


TOKEN = "t0ken-for-tests"


@pytest.fixture
def tls_server(tmp_path: Path, servers: list[NatsServer]) -> tuple[NatsServer, Pki]:
    pki = make_pki(tmp_path / "pki")
    tls = (f'tls {{ cert_file: "{pki.server_cert}", key_file: "{pki.server_key}", '
           f'ca_file: "{pki.ca}", verify: true, timeout: 2 }}\n'
           f'authorization {{ token: "{TOKEN}" }}\n')
    return started(servers, NatsServer(tmp_path, "tls", extra=tls)), pki


@needs_openssl
def test_tls_refusals(tmp_path: Path, tls_server: tuple[NatsServer, Pki]) -> None:
    srv, pki = tls_server
    good = {"tls": True, "tls_ca": str(pki.ca), "tls_cert": str(pki.client_cert),
            "tls_key": str(pki.client_key), "token": TOKEN, "stream": unique("TLS_")}
    cases: list[tuple[dict[str, object], list[str]]] = [
        ({**good, "tls_cert": "", "tls_key": ""}, ["client certificate"]),
        ({**good, "token": "wrong"}, ["refused the credentials", "token"]),
        ({**good, "tls_ca": str(pki.other_ca)}, ["TLS certificate was refused", "tls_ca"]),
        ({k: v for k, v in good.items() if not k.startswith("tls")}, []),
    ]
    for i, (keys, words) in enumerate(cases):
        cfg = write_config(tmp_path / f"bad{i}.toml", keys)
        res = run_pipeline("--config", str(cfg), "--sink", "nats", "--nats-url", srv.url,
                           "--duration", "0.1")
        assert_one_line(res, f"cannot connect to {srv.url}", *words)
        res2 = run_consume("--config", str(cfg), "--nats-url", srv.url, "--idle-exit", "0.1")
        assert_one_line(res2, "consume: cannot connect", *words)


@needs_openssl
def test_tls_with_credentials_delivers(tmp_path: Path, pin_root: Path,
                                       pipeline_proc: StartPipeline,
                                       tls_server: tuple[NatsServer, Pki]) -> None:
    srv, pki = tls_server
    prefix = unique("tls")
    cfg = write_config(tmp_path / "good.toml", {
        "tls": True, "tls_ca": str(pki.ca), "tls_cert": str(pki.client_cert),
        "tls_key": str(pki.client_key), "token": TOKEN, "stream": unique("TLS_")})
    host = start_host(pipeline_proc, tmp_path, pin_root, "sec", cfg, srv.url,
                      f"{prefix}.ev.{{host}}")
    host.make("t", 500)
    wait_for(lambda: len(host.ref.read_bytes().splitlines()) >= 500, 30, "events")
    assert host.proc.stop() == 0, host.proc.stderr()
    final = host.proc.final()
    assert final["sinks"]["nats"]["delivered"] == final["read"] == 500, final
    events, _ = consume(srv.url, f"{prefix}.ev.>", "--config", str(cfg))
    assert events == host.reference()


def test_secret_files_checked(tmp_path: Path) -> None:
    seed = tmp_path / "seed.nk"
    seed.write_text("SUAEXAMPLE\n")
    seed.chmod(0o644)
    cfg = write_config(tmp_path / "c.toml", {"nkey_seed": str(seed)})
    res = run_pipeline("--config", str(cfg), "--sink", "nats", "--nats-url",
                       "nats://127.0.0.1:4222", "--duration", "0.1")
    assert_one_line(res, "'nkey_seed'", "readable by other users", "chmod 600")
    link = tmp_path / "link.creds"
    link.symlink_to(seed)
    cfg2 = write_config(tmp_path / "c2.toml", {"creds": str(link)})
    res2 = run_pipeline("--config", str(cfg2), "--sink", "nats", "--nats-url",
                        "nats://127.0.0.1:4222", "--duration", "0.1")
    assert_one_line(res2, "'creds'", "symbolic link")
