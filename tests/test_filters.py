"""Kernel-evaluated filters (--include-path, --exclude-path, --uid, --cgroup): a real
pipeline with its real BPF producers, real files created by real processes (root and
user nobody through setpriv, and processes moved into cgroups the test makes)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    PipelineProc,
    StartPipeline,
    assert_one_line,
    read_jsonl,
    run_pipeline,
    wait_for,
)
from tests.helpers.cgroup_dirs import cg_base, needs_cgroup2  # noqa: F401

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (BPF)")

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
PY = "/usr/bin/python3"  # stdlib only: user nobody can run it wherever the checkout is

# Creates the files argv[2:] in directory argv[1] (O_EXCL: each call creates its file).
CREATE = r"""
import os, sys
for name in sys.argv[2:]:
    os.close(os.open(os.path.join(sys.argv[1], name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
"""

# Moves itself into the cgroup argv[1], then creates argv[3:] in argv[2].
IN_CGROUP = r"""
import os, sys
fd = os.open(os.path.join(sys.argv[1], "cgroup.procs"), os.O_WRONLY)
os.write(fd, b"0")
os.close(fd)
for name in sys.argv[3:]:
    os.close(os.open(os.path.join(sys.argv[2], name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
"""


@pytest.fixture
def work() -> Iterator[Path]:
    """A directory every user may create files in, under one every user may enter."""
    d = Path(tempfile.mkdtemp(prefix="ap-filters-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def mkdirs(base: Path, *names: str) -> None:
    for n in names:
        (base / n).mkdir(parents=True)
        (base / n).chmod(0o777)


def create(d: Path, *names: str, pre: tuple[str, ...] = ()) -> None:
    subprocess.run([*pre, PY, "-c", CREATE, str(d), *names], check=True, timeout=60)


@pytest.fixture(scope="module")
def kprefix() -> Iterator[str]:
    """What the kernel puts in front of this process's absolute paths: "" on a real root,
    the chroot's location under a chroot (CI), found from one real event."""
    d = Path(tempfile.mkdtemp(prefix="ap-kprefix-"))
    out = d / "ev.jsonl"
    pl = PipelineProc("--trigger", "tracepoint", "--sink", "jsonl", "--output", str(out),
                      "--filter-comm", "touch")
    try:
        probe = d / "probe"
        subprocess.run(["touch", str(probe)], check=True)
        wait_for(lambda: out.exists() and any(e["path"].endswith(str(probe))
                                              for e in read_jsonl(out)), what="probe event")
        pl.stop()
        got = next(e["path"] for e in read_jsonl(out) if e["path"].endswith(str(probe)))
        yield got[:-len(str(probe))]
    finally:
        pl.close()
        shutil.rmtree(d, ignore_errors=True)


def run_until(start: StartPipeline, out: Path, *flags: str, act: Any, last: Path,
              last_pre: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """A pipeline with flags into out; act() creates the files, then `last` (which the
    filters let through) marks the end: every event before it has been read."""
    pl = start("--trigger", "tracepoint", "--sink", "jsonl", "--output", str(out), *flags)
    act()
    create(last.parent, last.name, pre=last_pre)
    wait_for(lambda: out.exists() and any(e["path"].endswith(str(last)) for e in read_jsonl(out)),
             what="the last file's event")
    assert pl.stop() == 0, pl.stderr()
    evs = read_jsonl(out)
    assert [e["seq"] for e in evs] == list(range(len(evs)))
    return evs


def names(evs: list[dict[str, Any]], work: Path) -> set[str]:
    """The created files of the test's tree (relative to work) the events name."""
    w = str(work) + "/"
    return {e["path"].split(w, 1)[1] for e in evs if w in e["path"]}


def test_paths_include_exclude_boundary_truncated(pipeline_proc: StartPipeline, work: Path,
                                                  kprefix: str) -> None:
    mkdirs(work, "in/ex", "in/exx", "x/a", "x/ab", "out")
    # a path longer than the record's 512 bytes: cut, so it cannot be judged by prefix
    deep = work / "out" / ("d" * 200) / ("e" * 200) / ("f" * 200)
    deep.mkdir(parents=True)
    k = kprefix + str(work)
    evs = run_until(
        pipeline_proc, work / "ev.jsonl",
        "--include-path", f"{k}/in", "--include-path", f"{k}/x/a",
        "--exclude-path", f"{k}/in/ex",
        act=lambda: (create(work / "in", "f"), create(work / "in/ex", "f"),
                     create(work / "in/exx", "f"), create(work / "x/a", "f"),
                     create(work / "x/ab", "f"), create(work / "out", "f"),
                     create(deep, "long")),
        last=work / "in" / "last")
    got = names(evs, work)
    assert got == {"in/f", "in/exx/f", "x/a/f", "in/last"}, got
    long = [e for e in evs if e["path"].endswith("/long")]
    assert len(long) == 1 and long[0]["path_truncated"] is True
    assert {e["filter_gen"] for e in evs} == {1}


def test_uid(pipeline_proc: StartPipeline, work: Path) -> None:
    mkdirs(work, "d")
    evs = run_until(pipeline_proc, work / "ev.jsonl", "--uid", "65534",
                    act=lambda: (create(work / "d", "root"),
                                 create(work / "d", "nobody", pre=tuple(NOBODY))),
                    last=work / "d" / "last", last_pre=tuple(NOBODY))
    assert names(evs, work) == {"d/nobody", "d/last"}
    assert {e["uid"] for e in evs} == {65534}


@needs_cgroup2
def test_cgroup_and_descendants(pipeline_proc: StartPipeline, work: Path,
                                cg_base: Path) -> None:  # noqa: F811
    sel, sub, other = cg_base / "sel", cg_base / "sel" / "sub", cg_base / "other"
    for c in (sel, sub, other):
        c.mkdir()
    mkdirs(work, "d")

    def act() -> None:
        for cg, name in ((sel, "sel"), (sub, "sub"), (other, "other")):
            subprocess.run([sys.executable, "-c", IN_CGROUP, str(cg), str(work / "d"), name],
                           check=True, timeout=30)
        create(work / "d", "root")

    out = work / "ev.jsonl"
    pl = pipeline_proc("--trigger", "tracepoint", "--sink", "jsonl", "--output", str(out),
                       "--cgroup", str(sel))
    act()
    subprocess.run([sys.executable, "-c", IN_CGROUP, str(sub), str(work / "d"), "last"],
                   check=True, timeout=30)
    wait_for(lambda: out.exists() and any(e["path"].endswith("/d/last") for e in read_jsonl(out)),
             what="the last file's event")
    assert pl.stop() == 0
    assert names(read_jsonl(out), work) == {"d/sel", "d/sub", "d/last"}


def test_combined(pipeline_proc: StartPipeline, work: Path, kprefix: str) -> None:
    mkdirs(work, "d1", "d2")
    k = kprefix + str(work)
    nob = tuple(NOBODY)
    evs = run_until(pipeline_proc, work / "ev.jsonl", "--uid", "nobody",
                    "--include-path", f"{k}/d1",
                    act=lambda: (create(work / "d1", "nob", pre=nob),
                                 create(work / "d2", "nob", pre=nob),
                                 create(work / "d1", "root")),
                    last=work / "d1" / "last", last_pre=nob)
    assert names(evs, work) == {"d1/nob", "d1/last"}


@pytest.mark.parametrize("flags,words", [
    (["--include-path", "tmp/x"], ["include_paths", "absolute"]),
    (["--exclude-path", "/tmp/../x"], ["exclude_paths", "normalised"]),
    (["--include-path", "/tmp/x/"], ["include_paths", "normalised"]),
    (["--include-path", "/"], ["include_paths"]),
    (["--include-path", "/" + "a" * 256], ["include_paths", "256 bytes"]),
    (["--uid", "4294967295"], ["uids", "out of range"]),
    (["--uid", "no-such-user-ap"], ["uids", "no user"]),
    (["--cgroup", "relative/cg"], ["cgroups", "absolute"]),
    ([a for i in range(65) for a in ("--include-path", f"/p{i}")], ["include_paths", "64"]),
])
def test_bad_values(flags: list[str], words: list[str]) -> None:
    assert_one_line(run_pipeline("--trigger", "none", *flags), *words)


def test_bad_cgroup_dir(work: Path) -> None:
    assert_one_line(run_pipeline("--trigger", "none", "--cgroup", str(work)), "cgroups")


GEN_LINE = re.compile(r"filters: generation (\d+) in force from between monotonic (\d+) and "
                      r"(\d+) ns")


def generations(pl: PipelineProc) -> dict[int, tuple[int, int]]:
    out: dict[int, tuple[int, int]] = {}
    for line in pl.lines:
        m = GEN_LINE.search(line)
        if m:
            out[int(m.group(1))] = (int(m.group(2)), int(m.group(3)))
    return out


def test_bad_config_on_sighup_keeps_filter(pipeline_proc: StartPipeline, work: Path,
                                           kprefix: str) -> None:
    mkdirs(work, "a", "b")
    k = kprefix + str(work)
    conf = work / "c.toml"
    conf.write_text(f'include_paths = ["{k}/a"]\n')
    out = work / "ev.jsonl"
    pl = pipeline_proc("--trigger", "tracepoint", "--sink", "jsonl", "--output", str(out),
                       "--config", str(conf))
    conf.write_text('include_paths = ["relative"]\n')
    pl.proc.send_signal(1)
    wait_for(lambda: any("SIGHUP" in ln for ln in pl.lines), what="the reload's warning")
    conf.write_text("include_paths = [\n")
    pl.proc.send_signal(1)
    wait_for(lambda: sum("SIGHUP" in ln for ln in pl.lines) == 2, what="the second warning")
    conf.write_text(f'include_paths = ["{k}/a"]\nbatch = 17\n')
    pl.proc.send_signal(1)
    wait_for(lambda: sum("SIGHUP" in ln for ln in pl.lines) == 4, what="the third reload")
    create(work / "a", "f")
    create(work / "b", "f")
    create(work / "a", "last")
    wait_for(lambda: out.exists() and any(e["path"].endswith("/a/last") for e in read_jsonl(out)),
             what="the last file's event")
    assert pl.stop() == 0
    assert names(read_jsonl(out), work) == {"a/f", "a/last"}
    warn = [ln for ln in pl.lines if "SIGHUP" in ln]
    assert "include_paths" in warn[0] and "generation 1 stays" in warn[0], warn
    assert "not valid TOML" in warn[1] and "generation 1 stays" in warn[1], warn
    assert "batch" in warn[2] and "restart" in warn[2], warn
    assert "unchanged" in warn[3], warn
    assert list(generations(pl)) == [1]
    assert pl.final()["filters"] == {"generation": 1, "reloads": 3, "reload_failures": 2,
                                     "unjudged": 0}
