"""Values: every number has a range checked before anything starts; a value
outside it, a config file that is not UTF-8, or a stress arena too small gives
one line on stderr and exit 2. Stress runs whose arena fills up count NOMEM and
pass. Without root, CAP_BPF and CAP_PERFMON get the real cause."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, assert_one_line, needs_root, run_pipeline

from pipeline.config import Config
from pipeline.ranges import BENCH, BURST, PIPELINE, SINK_JSONL, SINK_SOCKET, STRESS
from pipeline.sinks.jsonl import JsonlSink
from pipeline.sinks.socket import SocketSink


def check(*args: str) -> subprocess.CompletedProcess[str]:
    return run_pipeline(*args, "--check-config")


@pytest.mark.parametrize("flag, value", [
    ("--duration", "nan"), ("--duration", "inf"), ("--duration", "-inf"), ("--duration", "1e400"),
    ("--stats", "nan"), ("--stats", "0.001"), ("--stats", "1e-9"),
    ("--max-events", str(10**30)), ("--filter-pid", str(2**32)), ("--batch", "0"),
    ("--spin-us", "-1"), ("--arena-pages", str(10**30)), ("--rotate-bytes", str(10**30)),
])
def test_flag_out_of_range(flag: str, value: str) -> None:
    line = assert_one_line(check(f"{flag}={value}"), f"argument {flag}", "must be", "--help")
    key = flag[2:].replace("-", "_")
    rng = PIPELINE.get(key) or SINK_JSONL[key]
    assert rng.describe() in line


@pytest.mark.parametrize("text, key", [
    ("duration = nan\n", "duration"), ("duration = inf\n", "duration"),
    ("stats = 0.01\n", "stats"), ("stats = -inf\n", "stats"),
    (f"max_events = {10**30}\n", "max_events"), (f"spin_us = {10**30}\n", "spin_us"),
    ("[sink.socket]\nconnect = 'h:1'\nbackoff_max = inf\n", "backoff_max"),
    ("[sink.socket]\nconnect = 'h:1'\nclose_timeout = nan\n", "close_timeout"),
    (f"[sink.socket]\nconnect = 'h:1'\nbuffer_events = {10**30}\n", "buffer_events"),
    (f"[sink.jsonl]\noutput = 'x'\nrotate_keep = {10**30}\n", "rotate_keep"),
])
def test_config_value_out_of_range(tmp_path: Path, text: str, key: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    assert_one_line(check("--config", str(cfg)), key, "must be")


def test_stats_at_its_bounds_is_accepted() -> None:
    for value, want in (("0", 0.0), ("0.1", 0.1), ("86400", 86400.0)):
        res = check("--stats", value)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["stats"] == want


def test_config_not_utf8_names_file_and_offset(tmp_path: Path) -> None:
    cfg = tmp_path / "latin1.toml"
    body = b'filter_comm = "caf' + b"\xe9" + b'"\n'
    cfg.write_bytes(b"duration = 1\n" + body)
    offset = len(b"duration = 1\n") + len('filter_comm = "caf')
    line = assert_one_line(check("--config", str(cfg)), str(cfg), "UTF-8")
    assert f"byte 0xe9 at byte offset {offset}" in line


def test_jsonl_output_with_nul(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[sink.jsonl]\noutput = "/tmp/a\\u0000b"\n')
    assert_one_line(check("--config", str(cfg), "--sink", "jsonl"), "'output'", "NUL")


def test_config_that_is_not_a_regular_file() -> None:
    assert_one_line(check("--config", "/dev/zero"), "/dev/zero", "not a regular file")


def test_check_config_prints_the_effective_config(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("duration = 7\nstats = 0.5\n[sink.jsonl]\noutput = 'o.jsonl'\n"
                   "rotate_bytes = '4096'\n")
    res = check("--config", str(cfg), "--sink", "jsonl", "--batch", "12")
    assert res.returncode == 0 and res.stderr == "", res.stderr
    got = json.loads(res.stdout)
    assert (got["duration"], got["stats"], got["batch"], got["sinks"]) == (7, 0.5, 12, ["jsonl"])
    assert got["sink_options"]["jsonl"] == {"output": "o.jsonl", "rotate_bytes": 4096,
                                            "rotate_keep": 5, "mode": 0o600,
                                            "allow_shared_dir": False}


def test_every_numeric_option_has_a_range() -> None:
    numeric = {name for name, v in vars(Config()).items()
               if isinstance(v, int | float) and not isinstance(v, bool)}
    assert numeric == set(PIPELINE)
    for sink, table in ((JsonlSink, SINK_JSONL), (SocketSink, SINK_SOCKET)):
        nums = {k for k, o in sink.options.items() if o.type in (int, float) and not o.coerce}
        assert nums == set(table), sink.name
        for key in nums:
            assert sink.options[key].check is table[key]


def test_readme_and_docs_show_every_range() -> None:
    readme = (ROOT / "README.md").read_text()
    for key, rng in PIPELINE.items():
        rows = [ln for ln in readme.splitlines() if f"| `{key}` |" in ln]
        assert any(rng.describe() in r for r in rows), (key, rng.describe())
    sinks_md = (ROOT / "docs/sinks.md").read_text()
    for key, rng in (*SINK_JSONL.items(), *SINK_SOCKET.items()):
        rows = [ln for ln in sinks_md.splitlines() if f"| `{key}` |" in ln]
        assert any(rng.describe() in r for r in rows), (key, rng.describe())
    for key, rng in STRESS.items():
        rows = [ln for ln in readme.splitlines() if f"| `{key}` |" in ln]
        assert any(rng.describe() in r for r in rows), (key, rng.describe())
    for key, rng in (*BENCH.items(), *BURST.items()):
        flag = "--" + key.replace("_", "-")
        assert re.search(re.escape(flag) + r"[^|]*" + re.escape(rng.describe()), readme), flag


@pytest.mark.parametrize("args, flag", [
    (["bench", "--events", "0"], "--events"), (["bench", "--seconds", "nan"], "--seconds"),
    (["bench", "--rounds", str(10**30)], "--rounds"),
    (["burst", "--events", str(10**30)], "--events"), (["burst", "--events", "1",
                                                        "--per-call", "0"], "--per-call"),
    (["stress", "--config", "configs/stress-hash.toml", "--duration", "inf"], "--duration"),
    (["stress", "hash", "--keys", "0"], "--keys"),
])
def test_subcommand_flags_out_of_range(args: list[str], flag: str) -> None:
    assert_one_line(run_pipeline(*args), f"argument {flag}", "must be", "--help")


def test_unknown_flag_is_one_line() -> None:
    assert_one_line(run_pipeline("--bogus"), "unrecognized arguments: --bogus", "--help")


@needs_root
def test_arena_too_small_for_the_queue() -> None:
    assert_one_line(run_pipeline("--queue-capacity", "4194304", "--arena-pages", "64", "--trigger",
                          "none", "--duration", "0.1"),
             "too small", "raise --arena-pages or lower --queue-capacity")


# ---- stress ----

def _stress(tmp_path: Path, text: str, *args: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "stress.toml"
    cfg.write_text("[stress]\n" + text)
    return run_pipeline("stress", "--config", str(cfg), *args, timeout=120)


@pytest.mark.parametrize("text, what", [
    ("structure = 'hash'\nduration = nan\n", "stress.duration"),
    ("structure = 'hash'\nduration = inf\n", "stress.duration"),
    (f"structure = 'hash'\nkeys = {10**30}\n", "stress.keys"),
    ("structure = 'hash'\npages = 8\n", "stress.pages"),
    ("structure = 'hash'\nworkload = 'insert=-1'\n", "bad workload part"),
    ("structure = 'hash'\nworkload = true\n", "stress.workload"),
    ("structure = 3\n", "stress.structure"),
    ("structure = 'hash'\nworkers = 1000\n", "stress.workers"),
])
def test_stress_values_out_of_range(tmp_path: Path, text: str, what: str) -> None:
    assert_one_line(_stress(tmp_path, text), what)


def test_stress_config_not_utf8(tmp_path: Path) -> None:
    cfg = tmp_path / "s.toml"
    good = b"[stress]\nstructure = 'hash' # "
    cfg.write_bytes(good + b"\xff\n")
    assert_one_line(run_pipeline("stress", "--config", str(cfg)), str(cfg),
             f"byte 0xff at byte offset {len(good)}")


@needs_root
def test_stress_arena_too_small_for_the_structure(tmp_path: Path) -> None:
    assert_one_line(_stress(tmp_path, "structure = 'hash'\ncapacity = 1048576\npages = 64\n"),
             "does not fit an arena of 64 pages", "raise --pages or lower --capacity")


@needs_root
@pytest.mark.parametrize("structure, pages", [("hash", 256), ("list", 64), ("skiplist", 64),
                                              ("msqueue", 64)])
def test_stress_arena_runs_out(tmp_path: Path, structure: str, pages: int) -> None:
    """An arena that fills up mid-run: inserts fail with NOMEM on both sides, are
    counted, change nothing, and every invariant holds on what did run."""
    mix = "workload = 'insert-only'\nprefill = 0.0\n" if structure != "msqueue" else ""
    res = _stress(tmp_path, f"structure = '{structure}'\npages = {pages}\nbatch = 256\n"
                            f"keys = 1000000\nworkers = 1\nkernel_threads = 1\nverify = true\n"
                            f"{mix}", "--duration", "1", "--format", "json")
    assert res.returncode == 0, res.stdout + res.stderr
    s: dict[str, Any] = json.loads(res.stdout)
    assert s["ok"] and all(s["checks"]["invariants"].values()), s["checks"]
    fails = s["total"]["failures"]
    assert fails["insert"]["NOMEM"] > 0 and s["memory"]["allocation_failures"] > 0, s
    assert "NOMEM" not in fails.get("delete", {}) and "NOMEM" not in fails.get("search", {})
    if structure != "msqueue":
        # every key inserted is in the structure, once, and verify counts it
        assert s["checks"]["final_keys"] == s["checks"]["verify"]["count"] > 0


# ---- CAP_BPF and CAP_PERFMON without root ----

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
          "--inh-caps=+bpf,+perfmon", "--ambient-caps=+bpf,+perfmon"]


def _as_nobody(tree: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NOBODY, "/usr/bin/python3", "-m", "pipeline", *args], cwd=tree,
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ["PATH"], "LANG": "C.UTF-8",
                               "PYTHONPATH": str(tree)})


@pytest.fixture
def nobody_pins() -> Iterator[Path]:
    """A bpffs directory user nobody owns, for its pins."""
    d = Path(f"/sys/fs/bpf/ap-nobody-{os.getpid()}")
    d.mkdir(mode=0o700)
    os.chown(d, 65534, 65534)
    yield d
    for sub in d.iterdir():
        for f in sub.iterdir():
            f.unlink()
        sub.rmdir()
    d.rmdir()


def _tracefs_readable_by_nobody() -> bool:
    ids = "/sys/kernel/tracing/events/syscalls/sys_enter_openat/id"
    res = subprocess.run([*NOBODY, "cat", ids], capture_output=True, timeout=10)
    return res.returncode == 0


@needs_root
def test_cap_bpf_without_root_runs(nobody_tree: Path, nobody_pins: Path) -> None:
    res = _as_nobody(nobody_tree, "--trigger", "none", "--duration", "0.3",
                     "--pin-dir", str(nobody_pins))
    assert res.returncode == 0, res.stderr
    final = [ln for ln in res.stderr.splitlines() if ln.startswith("pipeline: final ")]
    assert len(final) == 1 and json.loads(final[0][16:])["produced"] == 0


@needs_root
@pytest.mark.parametrize("trigger", ["tracepoint", "auto"])
def test_cap_bpf_without_root_names_tracefs(nobody_tree: Path, nobody_pins: Path,
                                            trigger: str) -> None:
    res = _as_nobody(nobody_tree, "--trigger", trigger, "--duration", "0.3",
                     "--pin-dir", str(nobody_pins))
    if _tracefs_readable_by_nobody():
        assert res.returncode == 0, res.stderr
        return
    line = assert_one_line(res, "tracefs", "run as root", "gid=", "--trigger none")
    assert "CONFIG_" not in line


@needs_root
def test_cap_bpf_without_root_names_the_pin_dir(nobody_tree: Path, nobody_pins: Path) -> None:
    theirs = Path(f"/sys/fs/bpf/ap-root-{os.getpid()}")
    theirs.mkdir(mode=0o700)
    try:
        res = _as_nobody(nobody_tree, "--trigger", "none", "--pin-dir", str(theirs))
        assert_one_line(res, str(theirs), "not writable", "--pin-dir")
    finally:
        shutil.rmtree(theirs)
