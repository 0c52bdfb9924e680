"""The command line as a user meets it: the commands and their help, run as the default
command, --version, -v/-q, the jsonl sink's default output and `--output -`, the console
script on root's PATH, an interpreter without the dependencies, and the systemd unit."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any, ClassVar

import pytest
from conftest import (
    ROOT,
    StartPipeline,
    assert_one_line,
    needs_root,
    parse_jsonl,
    read_jsonl,
    run_pipeline,
    wait_for,
)

from pipeline.cli import COMMANDS, build_parser
from pipeline.run_cmd import make_config
from pipeline.sinks.base import Batch, Option, Sink
from pipeline.sinks.jsonl import DEFAULT_OUTPUT

VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
GROUPS = ("capture", "sinks", "queue", "output", "diagnostics")


def burst(pl_pid: int, pin_root: Path, events: int) -> None:
    res = subprocess.run([sys.executable, "-m", "pipeline", "burst", "--events", str(events),
                          "--pin-dir", str(pin_root / str(pl_pid))],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


# -- help, the default command, --version ---------------------------------------------------

def test_help_lists_every_command_once_and_the_run_flags_grouped() -> None:
    res = run_pipeline("--help")
    assert res.returncode == 0 and res.stderr == "", res.stderr
    text = res.stdout
    assert text.startswith("usage: python -m pipeline ")
    block = text.split("\ncommands:\n", 1)[1].split("\n\n", 1)[0]
    listed = re.findall(r"^    (\S+)\s+\S", block, re.M)
    assert listed == list(COMMANDS), block
    sections = re.findall(r"^(\w+):$", text, re.M)
    assert sections == ["options", "commands", "options", *GROUPS], sections
    for flag in ("--trigger", "--sink", "--output", "--rotate-bytes", "--connect",
                 "--queue-capacity", "--stats", "--check-config", "--verbose", "--quiet"):
        assert len(re.findall(rf"^  (-\w, )?{flag}\b", text, re.M)) == 1, flag


@pytest.mark.parametrize("name", [c for c in COMMANDS if c != "run"])
def test_each_command_has_its_own_help(name: str) -> None:
    res = run_pipeline(name, "--help")
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert res.stdout.startswith(f"usage: python -m pipeline {name} ")
    assert "-q, --quiet" in res.stdout


def test_run_is_the_default_command(tmp_path: Path) -> None:
    out = str(tmp_path / "x.jsonl")
    args = ["--sink", "jsonl", "--output", out, "--batch", "7", "--check-config"]
    plain = run_pipeline(*args)
    explicit = run_pipeline("run", *args)
    moved = run_pipeline("-q", *args)
    assert plain.returncode == explicit.returncode == moved.returncode == 0, plain.stderr
    assert plain.stdout == explicit.stdout == moved.stdout
    cfg = parse_jsonl(plain.stdout.encode())[0]
    assert cfg["batch"] == 7 and cfg["sink_options"]["jsonl"]["output"] == out


def test_unknown_command_is_one_line() -> None:
    line = assert_one_line(run_pipeline("bnech"), "unknown command 'bnech'")
    for name in COMMANDS:
        assert name in line


def test_version() -> None:
    res = run_pipeline("--version")
    assert (res.returncode, res.stdout, res.stderr) == (0, f"python -m pipeline {VERSION}\n", "")


# -- sink plugins' flags ----------------------------------------------------------------------

class TaggedSink(Sink):
    name: ClassVar[str] = "tagged"
    options: ClassVar[dict[str, Option]] = {"tag": Option(str, "none", "a label")}

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> dict[str, str]:
        group.add_argument("--tagged-tag", metavar="TAG", help="tagged sink: its label")
        return {"tagged_tag": "tag"}

    async def start(self) -> None: ...

    async def write(self, batch: Batch) -> None: ...

    async def close(self) -> None: ...


def test_a_plugin_adds_its_own_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    from test_sinks import fake_entry_points

    fake_entry_points(monkeypatch, [("tagged", f"{__name__}:TaggedSink")])
    parser = build_parser()
    cfg = make_config(parser.parse_args(["--sink", "tagged", "--tagged-tag", "blue"]))
    assert cfg.sinks == ["tagged"] and cfg.sink_options == {"tagged": {"tag": "blue"}}
    assert make_config(parser.parse_args(["--sink", "tagged"])).sink_options == {}
    help_text = parser.command_parser("run").format_help()
    sinks_group = help_text.split("\nsinks:\n", 1)[1].split("\nqueue:\n", 1)[0]
    assert "--tagged-tag TAG" in sinks_group


# -- -v and -q ------------------------------------------------------------------------------

def _quick_run(pin_root: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return run_pipeline("--trigger", "none", "--duration", "0.2", "--pin-dir", str(pin_root),
                        *flags)


@needs_root
def test_quiet_keeps_only_the_final_statistics(pin_root: Path) -> None:
    res = _quick_run(pin_root, "-q")
    assert res.returncode == 0, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pipeline: final {"), res.stderr


@needs_root
def test_normal_and_verbose_output(pin_root: Path) -> None:
    normal = _quick_run(pin_root).stderr.splitlines()
    assert [ln.split(" ", 2)[1] for ln in normal] == ["trigger:", "ready", "final"], normal
    verbose = _quick_run(pin_root, "-v")
    assert verbose.returncode == 0, verbose.stderr
    lines = verbose.stderr.splitlines()
    assert sum(ln.startswith("pipeline: configuration {") for ln in lines) == 1
    assert any(ln.startswith("libbpf: ") for ln in lines)  # libbpf's own debug output
    assert not any(ln.startswith("libbpf: ") for ln in normal)


# -- the jsonl sink's outputs ---------------------------------------------------------------

@needs_root
def test_jsonl_without_output_writes_to_the_default_path(pin_root: Path,
                                                         pipeline_proc: StartPipeline) -> None:
    default = Path(DEFAULT_OUTPUT)
    before = default.stat().st_size if default.exists() else 0
    pl = pipeline_proc("--sink", "jsonl", "--trigger", "none", "--pin-dir", str(pin_root))
    burst(pl.proc.pid, pin_root, 5)
    assert pl.stop() == 0, pl.stderr()
    said = [ln for ln in pl.lines if ln.startswith("pipeline: sink jsonl: ")]
    assert said == [f"pipeline: sink jsonl: appending to {DEFAULT_OUTPUT} (the default; "
                    "--output PATH or --output - for standard output)"]
    st = default.parent.stat()
    assert (st.st_uid, st.st_mode & 0o7777) == (0, 0o750)
    with open(default, "rb") as f:
        f.seek(before)
        mine = parse_jsonl(f.read())
    assert [e["trigger"] for e in mine] == ["burst"] * 5
    assert pl.final()["sinks"]["jsonl"]["delivered"] == 5


@needs_root
def test_output_dash_writes_json_lines_to_stdout(pin_root: Path,
                                                 pipeline_proc: StartPipeline) -> None:
    pl = pipeline_proc("--sink", "jsonl", "--output", "-", "--trigger", "none",
                       "--pin-dir", str(pin_root), stdout=subprocess.PIPE)
    burst(pl.proc.pid, pin_root, 7)
    assert pl.stop() == 0, pl.stderr()
    assert pl.proc.stdout is not None
    events = parse_jsonl(pl.proc.stdout.read())
    assert [e["trigger"] for e in events] == ["burst"] * 7
    assert sorted(e["seq"] for e in events) == list(range(7))
    assert pl.final()["sinks"]["jsonl"] == {"delivered": 7, "dropped": {}, "dropped_total": 0,
                                            "failed": None}
    assert not any("appending to" in ln for ln in pl.lines)


def test_output_dash_cannot_rotate() -> None:
    assert_one_line(run_pipeline("--sink", "jsonl", "--output", "-", "--rotate-bytes", "4096",
                                 "--check-config"), "cannot be rotated", "rotate_bytes")


def test_output_dash_and_stdout_sink_together_are_refused() -> None:
    assert_one_line(run_pipeline("--sink", "stdout,jsonl", "--output", "-", "--check-config"),
                    "both write to standard output")


@needs_root
def test_output_dash_through_jq(pin_root: Path, tmp_path: Path) -> None:
    """`... --sink jsonl --output - | jq .` as the README shows it, jq reading the pipe."""
    jq = shutil.which("jq")
    if jq is None:
        pytest.skip("jq is not installed")
    out, err = tmp_path / "jq.out", tmp_path / "pipeline.err"
    cmd = (f"{sys.executable} -m pipeline --sink jsonl --output - --trigger none "
           f"--max-events 3 --duration 30 --pin-dir {pin_root} 2>{err} | {jq} -c . > {out}")
    sh = subprocess.Popen(["bash", "-o", "pipefail", "-c", cmd], cwd=ROOT)
    try:
        wait_for(lambda: err.exists() and "ready in" in err.read_text(), 15, "the run to be ready")
        (run_dir,) = list(pin_root.iterdir())
        burst(int(run_dir.name), pin_root, 3)
        assert sh.wait(30) == 0, err.read_text()
    finally:
        if sh.poll() is None:
            sh.kill()
            sh.wait()
    events = read_jsonl(out)
    assert [e["trigger"] for e in events] == ["burst"] * 3


# -- set-up: the console script, the wrong interpreter, the unit ------------------------------

def test_console_script_on_roots_path() -> None:
    link = Path("/usr/local/bin/arena-pipeline")
    if not (link.is_symlink() or link.exists()):
        pytest.fail(f"{link} is missing: `sudo make setup` makes it")
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    res = subprocess.run(["arena-pipeline", "--version"], capture_output=True, text=True,
                         env=env, cwd="/", timeout=30)
    assert (res.returncode, res.stdout, res.stderr) == (0, f"arena-pipeline {VERSION}\n", "")
    helped = subprocess.run(["arena-pipeline", "--help"], capture_output=True, text=True,
                            env=env, cwd="/", timeout=30)
    assert helped.stdout.startswith("usage: arena-pipeline [-h] [--version] COMMAND ...")


@needs_root
@pytest.mark.parametrize("planted", ["file", "foreign-link", "old-checkout-link", "ours"])
def test_console_link_replaces_only_its_own(planted: str, tmp_path: Path) -> None:
    """set-up's link in the bin directory: made where nothing is, replaced when it is a
    link into some checkout's .venv, and anything else there left exactly as it was."""
    bindir = tmp_path / "bin"
    bindir.mkdir(mode=0o755)
    link = bindir / "arena-pipeline"
    ours = ROOT / ".venv/bin/arena-pipeline"
    if planted == "file":
        link.write_text("#!/bin/sh\necho someone else's\n")
    elif planted == "foreign-link":
        link.symlink_to("/usr/bin/true")
    elif planted == "old-checkout-link":
        link.symlink_to("/srv/old/arena-pipeline/.venv/bin/arena-pipeline")
    before = (link.is_symlink(), os.readlink(link) if link.is_symlink() else link.read_text()) \
        if planted != "ours" else None
    res = subprocess.run(["bash", str(ROOT / "scripts/install-console.sh"), str(ROOT),
                          str(ROOT / ".venv")], env={**os.environ, "BINDIR": str(bindir)},
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    if planted in ("file", "foreign-link"):
        assert (link.is_symlink(), os.readlink(link) if link.is_symlink()
                else link.read_text()) == before
        assert "is not a link this set-up made; left alone" in res.stderr
    else:
        assert os.readlink(link) == str(ours)
    assert sorted(p.name for p in bindir.iterdir()) == ["arena-pipeline"]  # no temporary left


def test_interpreter_without_dependencies_says_so_in_one_line() -> None:
    system = Path("/usr/bin/python3")
    if not system.exists():
        pytest.skip("no /usr/bin/python3")
    probe = subprocess.run([str(system), "-c", "import orjson, uvloop, aiofiles"],
                           capture_output=True, cwd="/")
    if probe.returncode == 0:
        pytest.skip("/usr/bin/python3 has the dependencies")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    res = subprocess.run([str(system), "-m", "pipeline", "--sink", "jsonl"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=30)
    line = assert_one_line(res, "pipeline: this Python (/usr/bin/python3) lacks ",
                           ".venv/bin/python", "arena-pipeline")
    assert res.stdout == ""
    assert "orjson" in line


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = ROOT / "packaging" / "arena-pipeline.service"
    res = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                         timeout=60)
    mine = [ln for ln in (res.stdout + res.stderr).splitlines() if "arena-pipeline" in ln]
    assert res.returncode == 0 and mine == [], res.stdout + res.stderr
    text = unit.read_text()
    assert "ExecStart=/usr/local/bin/arena-pipeline --config /etc/arena-pipeline/config.toml\n" \
        in text
    assert "RestartPreventExitStatus=2\n" in text and "Restart=on-failure\n" in text


@needs_root
def test_install_puts_the_unit_and_keeps_an_existing_config(tmp_path: Path) -> None:
    env = {**os.environ, "DESTDIR": str(tmp_path)}
    cmd = ["bash", str(ROOT / "scripts/install-service.sh"), str(ROOT)]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    unit = tmp_path / "etc/systemd/system/arena-pipeline.service"
    conf = tmp_path / "etc/arena-pipeline/config.toml"
    assert unit.read_bytes() == (ROOT / "packaging/arena-pipeline.service").read_bytes()
    assert conf.read_bytes() == (ROOT / "packaging/config.toml").read_bytes()
    assert (unit.stat().st_mode & 0o7777, conf.stat().st_mode & 0o7777) == (0o644, 0o644)
    conf.write_text('sinks = ["stdout"]\n')
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert conf.read_text() == 'sinks = ["stdout"]\n'
    assert f"install: {conf} exists: kept as it is" in again.stderr.splitlines()


def test_service_config_is_valid() -> None:
    res = run_pipeline("--config", str(ROOT / "packaging" / "config.toml"), "--check-config")
    assert res.returncode == 0, res.stderr
    cfg: dict[str, Any] = parse_jsonl(res.stdout.encode())[0]
    assert cfg["sinks"] == ["jsonl"]
    assert cfg["sink_options"]["jsonl"]["output"] == DEFAULT_OUTPUT


@pytest.mark.parametrize("login", [{"token": "tok-3f9c1e7a"},
                                   {"user": "fleet", "password": "pw-8d2b44c0"}])
def test_credentials_never_printed(tmp_path: Path, login: dict[str, str]) -> None:
    """--check-config and -v print the configuration: a sink's credentials show as set,
    never as their value (the run is root's, its output may go to a shared log)."""
    secrets = [v for k, v in login.items() if k != "user"]
    cfg = tmp_path / "c.toml"
    cfg.write_text('[sink.nats]\nurl = "nats://127.0.0.1:4222"\n'
                   + "".join(f'{k} = "{v}"\n' for k, v in login.items()))
    res = subprocess.run([sys.executable, "-m", "pipeline", "--sink", "nats", "--config",
                          str(cfg), "--check-config"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    shown = __import__("json").loads(res.stdout)["sink_options"]["nats"]
    for k in login:
        assert shown[k] == ("fleet" if k == "user" else "(set; not shown)"), shown
    assert not any(v in res.stdout + res.stderr for v in secrets)
    # -v logs the configuration before anything is loaded
    res = subprocess.run([sys.executable, "-m", "pipeline", "-v", "--sink", "nats", "--config",
                          str(cfg), "--trigger", "none", "--duration", "0.1"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert "configuration" in res.stderr
    assert not any(v in res.stdout + res.stderr for v in secrets)
