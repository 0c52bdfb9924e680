"""`python -m pipeline stress`: every shipped per-structure config passes a short run (and
SPSC the other way round); the queue and stack invariants fail on what they must refuse;
bad values are one line on stderr and exit 2. The smoke config, the faults (a worker
killed, an arena run out), the JSON output and the history are in test_stress_run.py."""

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
from pipeline.stress_verify import invariants

ROOT = Path(__file__).resolve().parent.parent
NAMES = {m.name for m in registry()}
# one config per registered structure: configs/stress-NAME.toml
CONFIGS = sorted(c for c in (ROOT / "configs").glob("stress-*.toml")
                 if c.stem.removeprefix("stress-") in NAMES)
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs: needs root")


def stress(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", "stress", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


def _short_run(config: Path) -> dict[str, Any]:
    res = stress("--config", str(config), "--duration", "0.7", "--ops", "300000",
                 "--format", "json")
    assert res.returncode == 0, res.stdout + res.stderr
    summary: dict[str, Any] = json.loads(res.stdout)
    assert summary["ok"] and all(summary["checks"]["invariants"].values())
    assert summary["user"]["ops"] > 0 and summary["kernel"]["ops"] > 0
    return summary


def test_every_registered_structure_has_a_config() -> None:
    shipped = {tomllib.loads(c.read_text())["stress"]["structure"] for c in CONFIGS}
    assert shipped == NAMES


@needs_root
@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_short_run_passes(config: Path) -> None:
    summary = _short_run(config)
    if not meta_of(summary["structure"]).keyed:
        c = summary["checks"]
        assert c["pushed"] > 0
        assert c["pushed"] == c["popped_by_consumers"] + c["left_at_end"]


@needs_root
def test_spsc_user_producer_kernel_consumer(tmp_path: Path) -> None:
    cfg = tmp_path / "spsc-reverse.toml"
    cfg.write_text("[stress]\nstructure = 'spsc'\ncapacity = 1024\nbatch = 512\nverify = true\n"
                   "workers = 1\nkernel_threads = 0\n"
                   "consumers = 0\nkernel_consumers = 1\n")
    summary = _short_run(cfg)
    assert summary["checks"]["invariants"]["per-producer FIFO at every consumer"]


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
    inv = invariants(meta_of(structure), {1: 3, 2: 2}, consumers, drain)
    assert [k for k, ok in inv.items() if not ok] == [k for k in inv if broken and broken in k]


@pytest.mark.parametrize("pushed, consumers, lost, ok", [
    # a killed producer (count unknown): its values must be a prefix of its sequence
    ({1: None, 2: 1}, [_popped((1, 0), (1, 1), (2, 0))], False, True),
    ({1: None, 2: 1}, [_popped((1, 0), (1, 2), (2, 0))], False, False),
    # a killed consumer: values may be missing, none twice, none unknown
    ({1: 3, 2: 1}, [_popped((1, 0), (1, 2))], True, True),
    ({1: 3, 2: 1}, [_popped((1, 0), (1, 0))], True, False),
    ({1: 3, 2: 1}, [_popped((1, 3))], True, False),
])
def test_queue_invariants_after_a_kill(pushed: dict[int, int | None],
                                       consumers: list[QueueResult], lost: bool,
                                       ok: bool) -> None:
    inv = invariants(meta_of("msqueue"), pushed, consumers, _popped(), lost)
    once = [v for k, v in inv.items() if "once" in k or "twice" in k]
    assert once == [ok]


@pytest.mark.parametrize("text, what", [
    ("[stress]\nstructure = 'nosuch'\n", "no registered data structure"),
    ("[stress]\nstructure = 'hash'\nbatch = 0\n", "batch"),
    ("[stress]\nstructure = 'spsc'\nworkers = 2\n", "SPSC"),
    ("[stress]\nstructure = 'mpsc'\nconsumers = 1\nkernel_consumers = 1\n", "MPSC"),
    ("[stress]\nstructure = 'stack'\nconsumers = 0\n", "needs consumers"),
    ("[stress]\nstructure = 'hash'\nspeed = 3\n", "unknown key"),
    ("[stress]\nstructure = 'hash'\nverify = 1\n", "true or false"),
    ("[stress]\nstructure = 'hash'\nworkload = 'insert=50,pop=3'\n", "bad workload part"),
    ("[stress]\nstructure = 'hash'\n[other]\n", "unknown table"),
    ("not toml [", "TOML"),
])
def test_bad_config_exits_2(tmp_path: Path, text: str, what: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    res = stress("--config", str(cfg))
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and what in lines[0], res.stderr
    assert res.stdout == ""


@pytest.mark.parametrize("argv, what", [
    ([], "name a structure"),
    (["nosuch"], "no registered data structure"),
    (["hash", "-t", "33"], "--workers"),
    (["hash", "--threads", "0"], "--threads"),
    (["hash", "-o", "-1"], "--operations"),
    (["hash", "--duration", "nan"], "--duration"),
    (["hash", "--keys", "0"], "--keys"),
    (["hash", "--distribution", "zipf:1.5"], "zipf:THETA"),
    (["hash", "--distribution", "gauss"], "unknown distribution"),
    (["hash", "-w", "bogus"], "unknown workload"),
    (["hash", "-w", "insert=0,search=0"], "must not all be zero"),
    (["hash", "-w", "produce-consume"], "for queues and stacks"),
    (["msqueue", "-w", "read-mostly"], "produce-consume"),
    (["hash", "-t", "2", "--kill-worker", "3"], "names no worker"),
    (["hash", "--format", "xml"], "--format"),
    (["hash", "--prefill", "1.5"], "--prefill"),
])
def test_bad_flag_exits_2(argv: list[str], what: str) -> None:
    res = stress(*argv)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and what in lines[0], res.stderr
    assert res.stdout == ""
