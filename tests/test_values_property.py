"""Property: whatever config file and flags a user gives, the pipeline either
accepts them (every number finite and in its documented range) or answers with
one line on stderr and exit 2, never a traceback and never another exit code.

Generated: TOML documents (known and unknown keys, every TOML type, values at and
beyond each range's bounds, NaN, infinities, huge integers, [sink.NAME] tables)
in several encodings, and flag lists (numbers as text, junk, non-UTF-8 bytes).

Two levels: in-process, hundreds of examples through the same functions the
command line uses (parse_args, make_config, the stress loader), asserting
"ConfigError/SinkError, or a valid configuration"; and a few dozen through the
real command in a subprocess with --check-config (validation only, nothing
loaded), asserting the exit code and the one-line rule.

The profile is derandomized and keeps no example database: CI runs the same
examples every time (a failure reproduces from the test alone, and nothing is
written into the checkout); Hypothesis still shrinks a failing case.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.cli import build_parser
from pipeline.config import TRIGGERS, Config
from pipeline.errors import ConfigError
from pipeline.ranges import PIPELINE, SINK_JSONL, SINK_SOCKET, STRESS, Range
from pipeline.run_cmd import check_sink_options, make_config
from pipeline.sinks.base import SinkError
from pipeline.stress_config import KEYS, StressConfig, load

PROFILE = dict(deadline=None, derandomize=True, database=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
IN_PROCESS = settings(max_examples=400, **PROFILE)  # type: ignore[arg-type]
SUBPROCESS = settings(max_examples=30, **PROFILE)  # type: ignore[arg-type]

SPECIAL_FLOATS = [math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324]


def near(rng: Range) -> st.SearchStrategy[Any]:
    """Numbers at, inside and just outside a range, as the range's kind or not."""
    lo, hi = rng.lo, rng.hi
    if rng.kind is int:
        ints = st.sampled_from([int(lo), int(hi), int(lo) - 1, int(hi) + 1, 0, 10**30, -10**30])
        return st.one_of(ints, st.integers(int(lo), int(hi)))
    return st.one_of(st.sampled_from([lo, hi, lo - 1e-9, hi + 1e-6, 0.0, *SPECIAL_FLOATS]),
                     st.floats(lo, hi, allow_nan=False), st.integers(-10**30, 10**30))


junk = st.one_of(
    st.integers(-10**30, 10**30), st.floats(), st.booleans(), st.text(max_size=12),
    st.lists(st.integers(0, 5), max_size=3), st.dictionaries(st.text(max_size=3),
                                                             st.integers(0, 3), max_size=2),
)


def top_value(key: str) -> st.SearchStrategy[Any]:
    if key in PIPELINE:
        return st.one_of(near(PIPELINE[key]), junk)
    if key == "trigger":
        return st.one_of(st.sampled_from(TRIGGERS), junk)
    if key == "sinks":
        return st.one_of(st.lists(st.sampled_from(["stdout", "jsonl", "socket", "nosuch", ""]),
                                  max_size=3), junk)
    return junk


SINK_TABLES: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "jsonl": {"output": st.one_of(st.just("/tmp/ap-prop.jsonl"), st.text(max_size=8), junk),
              "mode": st.one_of(st.sampled_from([0o600, 600, "640", "0o777", 0o1000]), junk),
              **{k: st.one_of(near(r), junk) for k, r in SINK_JSONL.items()}},
    "socket": {"connect": st.one_of(st.sampled_from(["127.0.0.1:9", "[::1]:9", "unix:/x",
                                                      "h:99999", "unix:"]), junk),
               **{k: st.one_of(near(r), junk) for k, r in SINK_SOCKET.items()}},
    "stdout": {},
}
TOP_KEYS = [f.name for f in Config.__dataclass_fields__.values() if f.name != "sink_options"]


def toml_key(k: str) -> str:
    return json.dumps(k, ensure_ascii=False)


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) \
            else repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    assert isinstance(v, dict)
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


@st.composite
def toml_docs(draw: st.DrawFn, table: str = "") -> bytes:
    lines: list[str] = []
    if table:  # a [stress] document
        lines.append(f"[{table}]")
        names = st.sampled_from(["hash", "mpmc", "spsc", "stack", "list", "nosuch"])
        lines.append(f"structure = {toml_value(draw(names))}")
        for key in draw(st.lists(st.sampled_from([*STRESS, "workload", "distribution",
                                                  "verify", "bogus"]), max_size=6,
                                 unique=True)):
            if key == "workload":
                value = draw(st.one_of(
                    st.sampled_from(["read-mostly", "mixed", "produce-consume", "bogus"]),
                    st.builds("insert={},search={},delete={}".format,
                              *(st.one_of(st.integers(-2, 10**7), st.text(max_size=3))
                                for _ in range(3))),
                    junk))
            elif key == "distribution":
                value = draw(st.one_of(st.sampled_from(["uniform", "zipf:0.99", "zipf:1"]),
                                       st.builds("zipf:{}".format, st.floats()), junk))
            elif key == "verify":
                value = draw(st.one_of(st.booleans(), junk))
            else:
                value = draw(st.one_of(near(STRESS[key]), junk) if key in STRESS else junk)
            lines.append(f"{toml_key(key)} = {toml_value(value)}")
    else:
        keys = draw(st.lists(st.one_of(st.sampled_from(TOP_KEYS), st.text(max_size=6)),
                             max_size=6, unique=True))
        for key in keys:
            lines.append(f"{toml_key(key)} = {toml_value(draw(top_value(key)))}")
        for name in draw(st.lists(st.sampled_from([*SINK_TABLES, "nosuch"]), max_size=2,
                                  unique=True)):
            lines.append(f"[sink.{name}]")
            opts = SINK_TABLES.get(name, {"x": junk})
            for key in draw(st.lists(st.sampled_from([*opts, "bogus"]), max_size=4,
                                     unique=True)):
                value = draw(opts[key]) if key in opts else draw(junk)
                lines.append(f"{toml_key(key)} = {toml_value(value)}")
    text = "\n".join(lines) + "\n"
    how = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-16", "latin-1", "bad-byte"]))
    if how == "bad-byte":
        raw = text.encode()
        at = draw(st.integers(0, len(raw)))
        return raw[:at] + bytes([draw(st.integers(0x80, 0xFF))]) + raw[at:]
    return text.encode(how, errors="replace")


NUMERIC_FLAGS = ["--" + k.replace("_", "-") for k in PIPELINE] + ["--rotate-bytes"]
number_text = st.one_of(
    st.integers(-10**30, 10**30).map(str), st.floats().map(repr),
    st.sampled_from(["nan", "inf", "-inf", "1e400", "0x10", "", " 5 ", "1_000", "\u0663",
                     "0.1", "1e-9", "65536", "4194304"]),
    st.text(max_size=8),
)


@st.composite
def flag_lists(draw: st.DrawFn) -> list[str | bytes]:
    argv: list[str | bytes] = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["num", "num", "text", "switch", "bytes"]))
        if kind == "num":
            argv.append(f"{draw(st.sampled_from(NUMERIC_FLAGS))}={draw(number_text)}")
        elif kind == "text":
            flag = draw(st.sampled_from(["--filter-comm", "--sink", "--trigger", "--pin-dir",
                                         "--output", "--connect"]))
            argv.append(f"{flag}={draw(st.text(max_size=20))}")
        elif kind == "switch":
            argv.append(draw(st.sampled_from(["--stats", "--verbose", "--no-ignore-self",
                                              "--bogus", "-x"])))
        else:  # a command line that is not UTF-8
            flag = draw(st.sampled_from(["--filter-comm", "--pin-dir", "--output"]))
            argv.append(flag.encode() + b"=" + draw(st.binary(min_size=1, max_size=8)))
    # a command line cannot hold NUL
    return [a.replace("\0", "") if isinstance(a, str) else a.replace(b"\0", b"")
            for a in argv]


def _as_text(argv: list[str | bytes]) -> list[str]:
    return [a if isinstance(a, str) else os.fsdecode(a) for a in argv]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("values-property")


def assert_valid(cfg: Config) -> None:
    """What "valid" promises, stated apart from the range table."""
    assert cfg.trigger in TRIGGERS and cfg.sinks
    for key, rng in PIPELINE.items():
        value = getattr(cfg, key)
        assert type(value) in ((int,) if rng.kind is int else (int, float)), (key, value)
        assert math.isfinite(value) and 0 <= value < 2**63, (key, value)
        assert rng(value) is None, (key, value)
    assert cfg.stats == 0 or cfg.stats >= 0.1
    assert cfg.duration <= 365 * 24 * 3600
    for text in (cfg.filter_comm, cfg.pin_dir, *cfg.sinks):
        assert "\0" not in text
        text.encode()
    for opts in check_sink_options(cfg).values():
        for v in opts.values():
            if isinstance(v, float):
                assert math.isfinite(v)
            if isinstance(v, int):
                assert abs(v) < 2**63


@IN_PROCESS
@given(doc=toml_docs(), flags=flag_lists(), use_file=st.booleans())
def test_config_and_flags_in_process(scratch: Path, doc: bytes, flags: list[str | bytes],
                                     use_file: bool) -> None:
    path = scratch / "c.toml"
    path.write_bytes(doc)
    argv = (["--config", str(path)] if use_file else []) + _as_text(flags)
    try:
        cfg = make_config(build_parser().parse_args(argv))
        check_sink_options(cfg)  # what --check-config and the run's start add
    except (ConfigError, SinkError) as e:
        assert str(e).strip()
        return
    assert_valid(cfg)


@IN_PROCESS
@given(doc=toml_docs(table="stress"),
       duration=st.one_of(st.none(), near(STRESS["duration"])),
       ops=st.one_of(st.none(), near(STRESS["operations"])))
def test_stress_config_in_process(scratch: Path, doc: bytes, duration: Any, ops: Any) -> None:
    path = scratch / "s.toml"
    path.write_bytes(doc)
    flags = dict.fromkeys(KEYS)
    flags.update(config=str(path), duration=duration, operations=ops)
    try:
        cfg = load(argparse.Namespace(**flags))
    except ConfigError as e:
        assert str(e).strip()
        return
    assert isinstance(cfg, StressConfig) and isinstance(cfg.structure, str)
    for key, rng in STRESS.items():
        value = getattr(cfg, key)
        assert not isinstance(value, bool) and math.isfinite(value), (key, value)
        assert rng(value) is None, (key, value)
    if cfg.meta.keyed:
        mix = cfg.mix()
        assert all(isinstance(w, int) and not isinstance(w, bool) and w >= 0 for w in mix)
        assert any(mix)
    assert 0 <= cfg.theta() < 1


def _run(argv: list[str | bytes]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "pipeline", *argv], cwd=ROOT,
                          capture_output=True, timeout=60, check=False)


def assert_rule(res: subprocess.CompletedProcess[bytes]) -> None:
    err = res.stderr.decode(errors="replace")
    assert "Traceback" not in err, err
    assert res.returncode in (0, 2), (res.returncode, err)
    if res.returncode == 2:
        assert len(err.splitlines()) == 1 and err.startswith("pipeline: "), err
        assert res.stdout == b""
    else:
        assert err == "", err
        effective = json.loads(res.stdout)
        for key, rng in PIPELINE.items():
            assert rng(effective[key]) is None, (key, effective[key])


@SUBPROCESS
@given(doc=toml_docs(), flags=flag_lists())
def test_command_line_one_line_or_runs(scratch: Path, doc: bytes,
                                       flags: list[str | bytes]) -> None:
    path = scratch / "cli.toml"
    path.write_bytes(doc)
    assert_rule(_run(["--config", str(path), *flags, "--check-config"]))


# ---- values that pass validation, run for real ----

REAL_RUN = settings(max_examples=10, **PROFILE)  # type: ignore[arg-type]


@st.composite
def valid_flags(draw: st.DrawFn) -> list[str]:
    """In-range values of the numeric options, as flags. The queue stays at most
    2^20 events here: the largest one is valid but touches 1.4 GB, not for CI."""
    argv: list[str] = []
    for key in draw(st.lists(st.sampled_from(["max_events", "filter_pid", "queue_capacity",
                                              "arena_pages", "batch", "spin_us"]),
                             unique=True, max_size=4)):
        rng = PIPELINE[key]
        if key == "queue_capacity":
            value: int = 1 << draw(st.integers(1, 20))
        else:
            value = draw(st.one_of(st.sampled_from([int(rng.lo), int(rng.hi)]),
                                   st.integers(int(rng.lo), int(rng.hi))))
        argv.append(f"--{key.replace('_', '-')}={value}")
    stats = draw(st.sampled_from([None, "0", "0.1"]))
    if stats is not None:
        argv.append(f"--stats={stats}")
    argv.append(f"--filter-comm={draw(st.text(max_size=5)).replace(chr(0), '')}")
    return argv


@pytest.fixture(scope="module")
def pins() -> Any:
    """The runs' pin root; each run removes its own directory in it."""
    d = Path(f"/sys/fs/bpf/ap-values-{os.getpid()}")
    yield d
    if d.exists():
        d.rmdir()


@pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs: needs root")
@REAL_RUN
@given(flags=valid_flags())
def test_valid_values_run(scratch: Path, pins: Path, flags: list[str]) -> None:
    """Whatever passes validation starts, runs and stops cleanly (exit 0), or is
    refused with one line (exit 2: e.g. a queue larger than the arena)."""
    out = scratch / "run.jsonl"
    res = _run([*flags, "--trigger", "none", "--duration", "0.2", "--sink", "jsonl",
                "--output", str(out), "--pin-dir", str(pins)])
    err = res.stderr.decode(errors="replace")
    assert "Traceback" not in err, err
    assert res.returncode in (0, 2), (res.returncode, err)
    if res.returncode == 2:
        assert len(err.splitlines()) == 1, err
    else:
        finals = [ln for ln in err.splitlines() if ln.startswith("pipeline: final ")]
        assert len(finals) == 1, err
        final = json.loads(finals[0][len("pipeline: final "):])
        assert final["produced"] == final["read"] == 0
