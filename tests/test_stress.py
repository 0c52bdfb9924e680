"""`python -m pipeline stress`: every shipped config passes a short run; a bad
config is one line on stderr and exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").glob("stress-*.toml"))


def _stress(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", "stress", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs: needs root")
@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_short_run_passes(config: Path) -> None:
    res = _stress("--config", str(config), "--duration", "0.7", "--ops", "300000")
    assert res.returncode == 0, res.stdout + res.stderr
    summary = json.loads(res.stdout)
    assert summary["ok"] and all(summary["invariants"].values())
    assert summary["user"]["ops"] > 0 and summary["kernel"]["ops"] > 0


@pytest.mark.parametrize("text, what", [
    ("[stress]\nstructure = 'nosuch'\n", "no registered data structure"),
    ("[stress]\nstructure = 'hash'\nbatch = 0\n", "batch"),
    ("[stress]\nstructure = 'spsc'\nuser_workers = 2\n", "SPSC"),
    ("[stress]\nstructure = 'hash'\nspeed = 3\n", "unknown key"),
    ("not toml [", "TOML"),
])
def test_bad_config_exits_2(tmp_path: Path, text: str, what: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    res = _stress("--config", str(cfg))
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and what in lines[0], res.stderr
