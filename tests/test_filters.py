"""Kernel-evaluated filters (--include-path, --exclude-path, --uid, --cgroup): a real
pipeline with its real BPF producers, real files created by real processes (root and
user nobody through setpriv, and processes moved into cgroups the test makes)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    PipelineProc,
    StartPipeline,
    assert_one_line,
    read_jsonl,
    run_pipeline,
    wait_for,
)
from helpers.cgroup_dirs import needs_cgroup2
from prometheus_client.parser import text_string_to_metric_families

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
    assert sorted(e["seq"] for e in evs) == list(range(len(evs)))
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
                                cg_base: Path) -> None:
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
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    pl = pipeline_proc("--trigger", "tracepoint", "--sink", "jsonl", "--output", str(out),
                       "--config", str(conf), "--metrics", f"127.0.0.1:{port}")
    conf.write_text('include_paths = ["relative"]\n')
    pl.proc.send_signal(1)
    wait_for(lambda: any("SIGHUP" in ln for ln in pl.lines), what="the reload's warning")
    conf.write_text("include_paths = [\n")
    pl.proc.send_signal(1)
    wait_for(lambda: sum("SIGHUP" in ln for ln in pl.lines) == 2, what="the second warning")
    conf.write_text(f'include_paths = ["{k}/a"]\nbatch = 17\n')
    pl.proc.send_signal(1)
    wait_for(lambda: sum("SIGHUP" in ln for ln in pl.lines) == 4, what="the third reload")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        body = r.read().decode()
    got = {s.name: s.value for fam in text_string_to_metric_families(body) for s in fam.samples
           if s.name.startswith("arena_pipeline_filter_")}
    assert got == {"arena_pipeline_filter_generation": 1, "arena_pipeline_filter_reloads_total": 3,
                   "arena_pipeline_filter_reload_failures_total": 2,
                   "arena_pipeline_filter_unjudged_events_total": 0}, got
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


# Creates files in argv[1] named argv[2]-N until the file argv[3] exists, and writes
# "name t0 t1" per file to argv[4]: the CLOCK_MONOTONIC ns just before and just after
# the call that created it (the producer judged it in between).
LOAD = r"""
import os, sys, time
d, tag, stop, log = sys.argv[1:5]
fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
rows = []
i = 0
while not os.path.exists(stop):
    name = f"{tag}-{i:07d}"
    t0 = time.monotonic_ns()
    os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644, dir_fd=fd))
    t1 = time.monotonic_ns()
    rows.append(f"{name} {t0} {t1}\n")
    i += 1
with open(log, "w") as f:
    f.writelines(rows)
"""


def prog_ids(pid: int) -> set[int]:
    """The ids of the BPF programs the process holds descriptors of."""
    ids = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        m = re.search(r"^prog_id:\s+(\d+)", text, re.M)
        if m:
            ids.add(int(m.group(1)))
    return ids


def passes(f: dict[str, Any], path: str, uid: int) -> bool:
    """The filter's rule, in Python: prefixes at component boundaries."""
    def under(p: str) -> bool:
        return path == p or path.startswith(p + "/")

    return ((not f["include_paths"] or any(under(p) for p in f["include_paths"]))
            and not any(under(p) for p in f["exclude_paths"])
            and (not f["uids"] or uid in f["uids"]))


def test_filter_changes_under_load(pipeline_proc: StartPipeline, work: Path,
                                   kprefix: str) -> None:
    """Four creators (two as root, two as nobody) make files nonstop in four directories
    while the config changes five times, each applied by SIGHUP. Every event must carry
    a generation that was in force while its file was being created and pass that
    generation's filter; every file created wholly within one generation's time is there
    iff that filter passes it; no sequence number is missing and no file comes twice; the
    programs are the same ones before and after."""
    dirs = ["r0", "r1", "n0", "n1"]
    mkdirs(work, *dirs, "logs")
    k = kprefix + str(work)
    steps: list[dict[str, Any]] = [
        {"include_paths": [f"{k}/r0", f"{k}/n0"], "exclude_paths": [], "uids": []},
        {"include_paths": [], "exclude_paths": [f"{k}/r0"], "uids": [65534]},
        {"include_paths": [k], "exclude_paths": [f"{k}/n1", f"{k}/r1"], "uids": []},
        {"include_paths": [f"{k}/r1"], "exclude_paths": [], "uids": [0]},
        {"include_paths": [], "exclude_paths": [], "uids": [0, 65534]},
        {"include_paths": [f"{k}/n1", f"{k}/r0"], "exclude_paths": [], "uids": [65534]},
    ]

    def toml(f: dict[str, Any]) -> str:
        def arr(v: list[Any]) -> str:
            return "[" + ", ".join(f'"{x}"' if isinstance(x, str) else str(x) for x in v) + "]"
        return "".join(f"{key} = {arr(f[key])}\n" for key in ("include_paths",
                                                              "exclude_paths", "uids"))

    conf = work / "c.toml"
    conf.write_text(toml(steps[0]))
    out = work / "ev.jsonl"
    pl = pipeline_proc("--trigger", "tracepoint", "--sink", "jsonl", "--output", str(out),
                       "--config", str(conf), "--queue-capacity", "262144",
                       "--arena-pages", "65536")
    before = prog_ids(pl.proc.pid)
    assert before
    stop = work / "stop"
    procs = []
    for d in dirs:
        pre = NOBODY if d.startswith("n") else []
        procs.append(subprocess.Popen([*pre, PY, "-c", LOAD, str(work / d), d, str(stop),
                                       str(work / "logs" / f"{d}.log")]))
    try:
        wait_for(lambda: out.exists() and out.stat().st_size > 0, what="first events")
        for i, f in enumerate(steps[1:], start=2):
            time.sleep(0.4)
            conf.write_text(toml(f))
            pl.proc.send_signal(1)
            wait_for(lambda i=i: i in generations(pl), what=f"generation {i}")
        time.sleep(0.4)
    finally:
        stop.touch()
        for p in procs:
            p.wait(60)
    assert all(p.returncode == 0 for p in procs)
    after = prog_ids(pl.proc.pid)
    assert after == before
    last_gen = len(steps)
    create(work / "r0", "zz-last", pre=tuple(NOBODY))  # passes the last generation
    wait_for(lambda: any(e["path"].endswith("/r0/zz-last") for e in read_jsonl(out)),
             what="the last file's event", timeout=60)
    assert pl.stop() == 0, pl.stderr()
    final = pl.final()
    assert final["dropped"]["kernel_queue_full"] == 0 and final["dropped"]["kernel_queue_busy"] == 0
    assert final["filters"]["unjudged"] == 0
    evs = read_jsonl(out)
    # producers on two CPUs take their numbers and their slots in separate steps, so
    # neighbours may come swapped: the numbers are checked as a set
    assert sorted(e["seq"] for e in evs) == list(range(len(evs))) == list(range(
        final["produced"]))
    gens = generations(pl)
    assert sorted(gens) == list(range(1, last_gen + 1))
    created: dict[str, tuple[int, int, int]] = {}  # path -> (t0, t1, uid)
    for d in dirs:
        for line in (work / "logs" / f"{d}.log").read_text().splitlines():
            name, t0, t1 = line.split()
            created[f"{k}/{d}/{name}"] = (int(t0), int(t1), 65534 if d[0] == "n" else 0)
    seen: dict[str, dict[str, Any]] = {}
    for e in evs:
        if e["path"] not in created:
            continue
        assert e["path"] not in seen, e
        seen[e["path"]] = e
        g = e["filter_gen"]
        t0, t1, uid = created[e["path"]]
        assert e["uid"] == uid
        assert passes(steps[g - 1], e["path"], uid), (g, e["path"])
        # in force at some time in [t0, t1]: published before t1, replaced after t0
        assert gens[g][0] <= t1, (g, e["path"])
        if g < last_gen:
            assert gens[g + 1][1] >= t0, (g, e["path"])
    whole = 0
    for path, (t0, t1, uid) in created.items():
        for g in range(1, last_gen + 1):
            start = gens[g][1]
            end = gens[g + 1][0] if g < last_gen else float("inf")
            if start <= t0 and t1 <= end:
                whole += 1
                assert (path in seen) == passes(steps[g - 1], path, uid), (g, path)
    # the load ran through every generation
    assert whole > 1000
    for g in range(1, last_gen + 1):
        assert any(e.get("filter_gen") == g for e in seen.values()), g


# A run of its own (one arena per process): the real session and producers, a thread
# publishing generation after generation as fast as it can, generation g letting through
# only directory d[g % 4], and four creators writing deep paths (a long path walk and
# scan: the window in which a producer's table can be rewritten under it). Prints one
# JSON object: events seen, events whose directory is not their generation's, events
# without a generation, and the session's unjudged count.
RAPID = r"""
import json, os, subprocess, sys, threading, time
from pipeline.kernel import Kernel
work, seconds, kprefix = sys.argv[1], float(sys.argv[2]), sys.argv[3]
deep = "/".join(["c" * 6] * 55)
dirs = [os.path.join(work, f"d{i}") for i in range(4)]
for d in dirs:
    os.makedirs(os.path.join(d, deep))
k = Kernel(65536, 262144, False)
k.attach("tracepoint")
s = k.session
s.set_filter(pid=0, comm=None, ignore_pid=os.getpid())
s.set_filters([(kprefix + dirs[1]).encode()], [], [], [])
s.enable(True)
LOAD = '''
import os, sys, time
end = time.monotonic() + float(sys.argv[2])
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
i = 0
while time.monotonic() < end:
    os.close(os.open(f"f{i}", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
    i += 1
'''
stop = False
pubs = 0
def writer():
    global pubs
    g = 1
    while not stop:
        g = s.set_filters([(kprefix + dirs[(g + 1) % 4]).encode()], [], [], [])
        pubs += 1
t = threading.Thread(target=writer)
t.start()
procs = [subprocess.Popen([sys.executable, "-c", LOAD, os.path.join(d, deep), str(seconds)])
         for d in dirs]
out = []
while any(p.poll() is None for p in procs):
    b, n = s.drain_json(65536)
    if n:
        out.append(b)
    else:
        time.sleep(0.001)
stop = True
t.join()
time.sleep(0.2)
while True:
    b, n = s.drain_json(65536)
    if not n:
        break
    out.append(b)
seen = wrong = nogen = 0
for blob in out:
    for line in blob.splitlines():
        e = json.loads(line)
        if work + "/" not in e["path"]:
            continue
        seen += 1
        d = int(e["path"].split(work + "/")[1][1])
        if "filter_gen" not in e:
            nogen += 1
        elif d != e["filter_gen"] % 4:
            wrong += 1
print(json.dumps({"publishes": pubs, "seen": seen, "wrong": wrong, "nogen": nogen,
                  "unjudged": s.filter_state()[1]}))
"""


def test_tables_rewritten_under_a_producer_are_judged_again(work: Path, kprefix: str) -> None:
    """Generations published back to back while files are created: a producer whose table
    is rewritten while it judges must notice (the second read of the generation word) and
    judge again, so every event carries a generation whose filter it passes. Without the
    second read, some tens of events a run come out under the wrong generation here."""
    from conftest import ROOT

    res = subprocess.run([sys.executable, "-c", RAPID, str(work), "3", kprefix], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["seen"] > 1000 and got["publishes"] > 10000, got
    assert got["wrong"] == 0, got
    assert got["nogen"] == got["unjudged"], got
