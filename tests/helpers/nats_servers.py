"""Real nats-server processes with JetStream for the tests: one server or a cluster on
loopback ports chosen here, each with its own store directory, written configuration file
and monitoring port (ready when /healthz says JetStream is healthy). Killed and started
again on the same ports and store, as a crashed node would be restarted."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

NATS_SERVER = shutil.which("nats-server")
needs_nats_server = pytest.mark.skipif(
    NATS_SERVER is None, reason="needs nats-server (make setup installs it)")


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (held together while chosen, so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


class NatsServer:
    """One nats-server; `extra` is more of its configuration file (TLS, authorization)."""

    def __init__(self, d: Path, name: str, extra: str = "", cluster: str = "",
                 ports: list[int] | None = None, jetstream: bool = True) -> None:
        self.dir = d / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.port, self.monitor, self.cluster_port = ports or free_ports(3)
        self.conf = self.dir / "server.conf"
        self.log = self.dir / "server.log"
        self.conf.write_text(
            f'server_name: "{name}"\n'
            f"listen: 127.0.0.1:{self.port}\n"
            f"http: 127.0.0.1:{self.monitor}\n"
            + (f'jetstream {{ store_dir: "{self.dir / "store"}" }}\n' if jetstream else "")
            + cluster + extra)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        assert NATS_SERVER is not None
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([NATS_SERVER, "-c", str(self.conf)],
                                         stdout=log, stderr=subprocess.STDOUT)
        return self

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor}/healthz",
                                        timeout=1) as r:
                return bool(json.loads(r.read()).get("status") == "ok")
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"nats-server {self.name} exited: {self.log.read_text()}")
            if self.healthy():
                return
            time.sleep(0.05)
        raise AssertionError(f"nats-server {self.name} not healthy: {self.log.read_text()}")

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing flushed or handed over on the way out."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def freeze(self) -> None:
        """SIGSTOP: connections stay open and take bytes, nothing answers (a hung node)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def varz(self, what: str = "jsz") -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor}/{what}",
                                    timeout=2) as r:
            return dict(json.loads(r.read()))


def cluster(d: Path, n: int = 3) -> list[NatsServer]:
    """n servers routed to each other in one JetStream cluster (not started)."""
    ports = free_ports(3 * n)
    groups = [ports[3 * i:3 * i + 3] for i in range(n)]
    routes = ", ".join(f"nats-route://127.0.0.1:{g[2]}" for g in groups)
    out = []
    for i, g in enumerate(groups):
        conf = (f"cluster {{ name: arena-test, listen: 127.0.0.1:{g[2]}, "
                f"routes: [{routes}] }}\n")
        out.append(NatsServer(d, f"n{i}", cluster=conf, ports=g))
    return out
