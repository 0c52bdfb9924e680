"""`python -m pipeline stress`: every shipped config passes a short run (and SPSC
the other way round); the queue and stack invariants fail on what they must
refuse; a bad config is one line on stderr and exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from array import array
from pathlib import Path
from typing import Any

import pytest

from pipeline.ds import meta_of, registry
from pipeline.pool import SEQ_BITS, QueueResult
from pipeline.stress import _queue_invariants

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").glob("stress-*.toml"))
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs: needs root")


def _stress(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", "stress", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


def _short_run(config: Path) -> dict[str, Any]:
    res = _stress("--config", str(config), "--duration", "0.7", "--ops", "300000")
    assert res.returncode == 0, res.stdout + res.stderr
    summary: dict[str, Any] = json.loads(res.stdout)
    assert summary["ok"] and all(summary["invariants"].values())
    assert summary["user"]["ops"] > 0 and summary["kernel"]["ops"] > 0
    return summary


def test_every_registered_structure_has_a_config() -> None:
    shipped = {tomllib.loads(c.read_text())["stress"]["structure"] for c in CONFIGS}
    assert shipped == {m.name for m in registry()}


@needs_root
@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_short_run_passes(config: Path) -> None:
    summary = _short_run(config)
    if not meta_of(summary["structure"]).keyed:
        assert summary["pushed"] > 0
        assert summary["pushed"] == summary["popped_by_consumers"] + summary["left_at_end"]


@needs_root
def test_spsc_user_producer_kernel_consumer(tmp_path: Path) -> None:
    cfg = tmp_path / "spsc-reverse.toml"
    cfg.write_text("[stress]\nstructure = 'spsc'\ncapacity = 1024\nbatch = 512\n"
                   "user_workers = 1\nkernel_threads = 0\n"
                   "user_consumers = 0\nkernel_consumers = 1\n")
    summary = _short_run(cfg)
    assert summary["invariants"]["per-producer FIFO at every consumer"]


def _popped(*values: tuple[int, int]) -> QueueResult:
    """A consumer that popped (producer, sequence) pairs in this order."""
    return QueueResult(popped=array("Q", (p << SEQ_BITS | i for p, i in values)).tobytes())


@pytest.mark.parametrize("structure, consumers, drain, broken", [
    # a correct run: both producers' values once each, in an order the structure allows
    ("msqueue", [_popped((1, 0), (2, 0), (1, 1))], _popped((1, 2), (2, 1)), None),
    ("stack", [_popped((1, 1), (2, 1), (1, 0))], _popped((1, 2), (2, 0)), None),
    # the same with one value missing, one twice, one nobody pushed
    ("msqueue", [_popped((1, 0), (1, 1))], _popped((1, 2), (2, 1)), "exactly once"),
    ("stack", [_popped((1, 1), (2, 1), (1, 0), (1, 1))], _popped((1, 2), (2, 0)), "exactly once"),
    ("mpsc", [_popped((1, 0), (2, 0), (1, 1), (3, 0))], _popped((1, 2), (2, 1)), "exactly once"),
    # a consumer that saw producer 1 out of order; a drain that gave producer 1 oldest first
    ("mpsc", [_popped((1, 1), (2, 0), (1, 0))], _popped((1, 2), (2, 1)), "FIFO"),
    ("stack", [_popped((2, 1), (2, 0))], _popped((1, 0), (1, 1), (1, 2)), "LIFO"),
])
def test_queue_invariants_refuse(structure: str, consumers: list[QueueResult],
                                 drain: QueueResult, broken: str | None) -> None:
    inv = _queue_invariants(meta_of(structure), {1: 3, 2: 2}, consumers, drain)
    assert [k for k, ok in inv.items() if not ok] == [k for k in inv if broken and broken in k]


@pytest.mark.parametrize("text, what", [
    ("[stress]\nstructure = 'nosuch'\n", "no registered data structure"),
    ("[stress]\nstructure = 'hash'\nbatch = 0\n", "batch"),
    ("[stress]\nstructure = 'spsc'\nuser_workers = 2\n", "SPSC"),
    ("[stress]\nstructure = 'mpsc'\nuser_consumers = 1\nkernel_consumers = 1\n", "MPSC"),
    ("[stress]\nstructure = 'stack'\nuser_consumers = 0\n", "needs user_consumers"),
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
