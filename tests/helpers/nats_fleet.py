"""Simulated hosts for the nats tests: each "host" is a pipeline process with its own host
id that captures only the files made by processes of its own comm, so the events each one
produced are known exactly (its jsonl reference file has every event it read)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import ROOT, PipelineProc, StartPipeline, parse_jsonl

# Creates files from a process whose comm is argv[1] (the pipeline filters on it).
_CREATOR = r"""
import os, sys
with open("/proc/self/comm", "w") as f:
    f.write(sys.argv[1])
fd = os.open(sys.argv[2], os.O_RDONLY | os.O_DIRECTORY)
for i in range(int(sys.argv[4])):
    os.close(os.open(f"{sys.argv[3]}-{i:06d}", os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=fd))
"""


def unique(prefix: str) -> str:
    """A fresh stream or subject name: a stream re-created under an old name is not the
    same stream to a replica that remembers the old one."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def write_config(path: Path, nats: dict[str, Any]) -> Path:
    lines = ["[sink.nats]"]
    for k, v in nats.items():
        if isinstance(v, bool):
            lines.append(f"{k} = {'true' if v else 'false'}")
        elif isinstance(v, (int, float)):
            lines.append(f"{k} = {v}")
        else:
            lines.append(f'{k} = "{v}"')
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


@dataclass
class Host:
    host_id: str
    comm: str
    work: Path
    ref: Path
    proc: PipelineProc

    def create(self, tag: str, n: int) -> subprocess.Popen[bytes]:
        """Start a creator of n files TAG-000000... in this host's directory."""
        return subprocess.Popen([sys.executable, "-c", _CREATOR, self.comm, str(self.work),
                                 tag, str(n)])

    def make(self, tag: str, n: int) -> None:
        assert self.create(tag, n).wait(120) == 0

    def reference(self) -> list[dict[str, Any]]:
        """Every event this host's pipeline read, in order, as consume shows them."""
        return [{"host": self.host_id, **e} for e in parse_jsonl(self.ref.read_bytes())]


def start_host(start: StartPipeline, tmp: Path, pin_root: Path, host_id: str,
               config: Path, url: str, subject: str) -> Host:
    work = tmp / f"work-{host_id}"
    work.mkdir()
    ref = tmp / f"ref-{host_id}.jsonl"
    comm = f"mk-{host_id}"[:15]
    pl = start("--config", str(config), "--sink", "nats,jsonl", "--nats-url", url,
               "--subject", subject, "--nats-host-id", host_id, "--filter-comm", comm,
               "--output", str(ref), "--pin-dir", str(pin_root))
    return Host(host_id, comm, work, ref, pl)


Consumed = tuple[list[dict[str, Any]], subprocess.CompletedProcess[bytes]]


def consume(url: str, subject: str, *extra: str, timeout: float = 60.0) -> Consumed:
    """`python -m pipeline consume` until it has been idle for 1.5 s: its lines, parsed."""
    res = subprocess.run([sys.executable, "-m", "pipeline", "consume", "--nats-url", url,
                          "--subject", subject, "--idle-exit", "1.5", *extra],
                         cwd=ROOT, capture_output=True, timeout=timeout)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    return parse_jsonl(res.stdout), res


def by_host(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        out.setdefault(e["host"], []).append(e)
    return out


def sink_stats(pl: PipelineProc) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the final statistics, the nats sink's part)."""
    final = pl.final()
    return final, final["sinks"]["nats"]
