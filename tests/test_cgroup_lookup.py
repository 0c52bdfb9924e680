"""A missed cgroup id is looked up by its file handle, one id at a time, never by walking
the tree and never waiting (pipeline/_core/cgfh.h, pipeline.cgroups.Cgroups), and the
drain's table stays bounded however many cgroups are made (pipeline/_core/cgtable.h).

The burst is real: an unprivileged user (setpriv, uid 65534) in a subtree delegated to it
(the directory and its cgroup.procs chowned, as systemd delegates user@UID.service) makes
a new cgroup per file it creates, as fast as it can. Expected ids are the directories'
inode numbers and expected paths what each process read in its own /proc/self/cgroup, so
neither comes from the code under test."""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import StartPipeline, needs_root, parse_jsonl, read_jsonl, wait_for
from helpers.cgroup_dirs import MOUNT, needs_cgroup2

from pipeline import _core
from pipeline.bench.cgroup_burst import BURSTER
from pipeline.cgroups import MAX_DEPTH, Cgroups

pytestmark = needs_root


BURST = 2000


# Moves itself into argv[1] and creates argv[2], named argv[3].
ONE = r"""
import os, sys
fd = os.open("/proc/self/comm", os.O_WRONLY)
os.write(fd, sys.argv[3].encode())
os.close(fd)
fd = os.open(os.path.join(sys.argv[1], "cgroup.procs"), os.O_WRONLY)
os.write(fd, b"0")
os.close(fd)
os.close(os.open(sys.argv[2], os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
"""


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the unprivileged user can create files in."""
    d = Path(tempfile.mkdtemp(prefix="ap-lookup-", dir="/tmp"))
    os.chmod(d, 0o777)
    try:
        yield d
    finally:
        shutil.rmtree(d)


def expected_path(cg: Path) -> bytes:
    assert MOUNT is not None
    rel = os.path.relpath(cg, os.fsdecode(MOUNT.point))
    return MOUNT.root.rstrip(b"/") + b"/" + os.fsencode(rel)


def open_session(comm: str) -> Any:
    """A session that sees only tasks named comm: other processes on the machine (other
    tests making and removing cgroups) would add lookups of their own."""
    s = _core.Session(arena_pages=8192, queue_capacity=8192)
    s.attach("tracepoint")
    s.set_filter(comm=comm)
    s.enable(True)
    return s


def drain_until(s: Any, cgroups: Cgroups, work: Path, count: int) -> dict[str, dict[str, Any]]:
    """The events of files in `work` once `count` of them are in, each missed id resolved
    as the reader does (pipeline/reader.py)."""
    async def run() -> dict[str, dict[str, Any]]:
        got: dict[str, dict[str, Any]] = {}
        while len(got) < count:
            data, n = s.drain_json(4096)
            for e in parse_jsonl(data):
                if os.path.dirname(e["name"]) == str(work):
                    got[os.path.basename(e["name"])] = e
            miss = s.cgroup_miss()
            if miss:
                await cgroups.resolve(miss)
            elif not n:
                await asyncio.sleep(0.01)
        return got

    return asyncio.run(asyncio.wait_for(run(), 120))


@needs_cgroup2
def test_a_burst_of_new_cgroups_from_a_delegated_user(cg_base: Path, shared_dir: Path) -> None:
    """Every event of a user making a new cgroup per file gets its exact id and path, with
    no walk of the tree (the walk and its rate limit are what the user could stall the
    reader with) and one handle lookup per new id."""
    deleg = cg_base / "user-deleg"
    deleg.mkdir()
    for p in (deleg, deleg / "cgroup.procs"):
        os.chown(p, 65534, 65534)
    comm = f"apcg-{secrets.token_hex(4)}"
    s = open_session(comm)
    try:
        cgroups = Cgroups.open(s)
        try:
            assert cgroups.direct and cgroups.counters.walks == 0
            # root moves the shell into the delegated cgroup, then drops to the user
            res = subprocess.run(
                ["sh", "-c", f'echo $$ > "{deleg}/cgroup.procs" && exec "$@"', "sh",
                 "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                 sys.executable, "-c", BURSTER, str(deleg), str(shared_dir), str(BURST), comm],
                capture_output=True, text=True, timeout=300)
            assert res.returncode == 0, res.stderr
            evs = drain_until(s, cgroups, shared_dir, BURST)
            want = {}
            for i in range(BURST):
                cg = deleg / f"c{i}"
                want[f"f{i}"] = (os.stat(cg).st_ino, os.fsdecode(expected_path(cg)))
                assert (shared_dir / f"f{i}").read_bytes() == expected_path(cg)
            assert {n: (e["cgroup_id"], e["cgroup"]) for n, e in evs.items()} == want
            c = cgroups.counters
            assert c.walks == 0
            assert c.unverified == 0 and c.gone == 0
            # one lookup per new cgroup, never one per event nor a walk
            assert c.found == c.lookups == BURST
            assert s.stats()["dropped_full"] == 0
        finally:
            cgroups.close()
    finally:
        s.close()


@needs_cgroup2
def test_names_a_user_may_choose(cg_base: Path, tmp_path: Path) -> None:
    """Text a cgroup name can hold that a /proc/self/fd link could confuse: ' (deleted)'
    (the kernel's mark of an unlinked file) at the end of a name and in the middle of a
    path; a newline, which the kernel refuses in cgroup names (cgroup_mkdir: EINVAL), so
    no path can hold one; a removed cgroup gives null, never a guess."""
    nl = cg_base / "a\nb"
    try:
        nl.mkdir()
    except OSError as e:
        assert e.errno == errno.EINVAL
        names = ["x (deleted)", "y (deleted)/z", "y (deleted)/z/ (deleted)"]
    else:
        names = ["x (deleted)", "y (deleted)/z", "y (deleted)/z/ (deleted)", "a\nb"]
    cgs = {f"n{i}": cg_base / rel for i, rel in enumerate(names)}
    for cg in cgs.values():
        cg.mkdir(parents=True, exist_ok=True)
    gone = cg_base / "gone (deleted)"
    gone.mkdir()
    gone_id = os.stat(gone).st_ino
    comm = f"apcg-{secrets.token_hex(4)}"
    s = open_session(comm)
    try:
        for name, cg in {**cgs, "in-gone": gone}.items():
            res = subprocess.run([sys.executable, "-c", ONE, str(cg), str(tmp_path / name), comm],
                                 capture_output=True, text=True, timeout=30)
            assert res.returncode == 0, res.stderr
        gone.rmdir()
        cgroups = Cgroups.open(s)
        try:
            evs = drain_until(s, cgroups, tmp_path, len(cgs) + 1)
            assert {n: (e["cgroup_id"], e["cgroup"]) for n, e in evs.items()} == {
                **{n: (os.stat(cg).st_ino, os.fsdecode(expected_path(cg)))
                   for n, cg in cgs.items()},
                "in-gone": (gone_id, None)}
            c = cgroups.counters
            assert (c.walks, c.lookups, c.gone, c.unverified) == (0, len(cgs) + 1, 1, 0)
        finally:
            cgroups.close()
    finally:
        s.close()


@needs_cgroup2
def test_lookup_of_ids_that_name_no_cgroup(cg_base: Path) -> None:
    """The mount's root, a cgroup, a removed one, an id no cgroup ever had, and the
    depth bound."""
    assert MOUNT is not None
    fd = os.open(MOUNT.point, os.O_RDONLY | os.O_DIRECTORY)
    try:
        root_id = os.fstat(fd).st_ino
        assert _core.cgroup_lookup(fd, root_id) == (_core.CG_FOUND, b"", 0)
        cg = cg_base / "here"
        cg.mkdir()
        cid = os.stat(cg).st_ino
        rel = b"/" + os.fsencode(os.path.relpath(cg, os.fsdecode(MOUNT.point)))
        assert _core.cgroup_lookup(fd, cid) == (_core.CG_FOUND, rel, 0)
        cg.rmdir()
        assert _core.cgroup_lookup(fd, cid) == (_core.CG_GONE, None, errno.ESTALE)
        assert _core.cgroup_lookup(fd, (1 << 62) + 5)[0] == _core.CG_GONE
        # as deep as the walk goes, and one deeper: that one is not named
        top = cg_base / "deep"
        deep = top.joinpath(*["d"] * (MAX_DEPTH - len(rel.split(b"/")) + 1))
        deep.mkdir(parents=True)
        want = b"/" + os.fsencode(os.path.relpath(deep, os.fsdecode(MOUNT.point)))
        assert want.count(b"/") == MAX_DEPTH
        assert _core.cgroup_lookup(fd, os.stat(deep).st_ino) == (_core.CG_FOUND, want, 0)
        (deep / "d").mkdir()
        assert _core.cgroup_lookup(fd, os.stat(deep / "d").st_ino) == (
            _core.CG_UNVERIFIED, None, errno.ELOOP)
    finally:
        os.close(fd)


def test_the_table_is_bounded_and_keeps_what_is_seen() -> None:
    """More ids than the table holds: it stays at its cap, evicting ids not looked up
    since the clock hand passed them, and an id the drain keeps meeting stays; an evicted
    id is a miss again (looked up again, not lost)."""
    cap = _core.CGROUP_TABLE_MAX
    s = _core.Session(arena_pages=4096, queue_capacity=1024)
    try:
        s.enable(True)
        s.cgroup_resolve(True)
        assert s.burst(1) == (1, 0)
        s.drain_json(10)
        own = s.cgroup_miss()
        assert own
        s.cgroup_set(own, b"/own")
        assert s.drain_json(10)[1] == 1  # looked up: marked seen
        extra = 5000
        for cid in range(10, 10 + cap - 1 + extra):
            s.cgroup_set(cid, b"/c%d" % cid)
        assert s.cgroup_count() == cap
        assert s.cgroup_evicted() == extra
        # the seen id survived; its events go through without a miss
        assert s.burst(3) == (3, 0)
        data, n = s.drain_json(10)
        assert n == 3 and s.cgroup_miss() == 0
        assert [e["cgroup"] for e in parse_jsonl(data)] == ["/own"] * 3
        # ids put in nonstop and never met (a user making cgroups): the hand comes round
        # again, the id no longer met is evicted too, and its next record is a miss
        before = s.cgroup_evicted()
        for cid in range(10**9, 10**9 + 4 * cap):
            s.cgroup_set(cid, b"/d")
        assert s.cgroup_count() == cap and s.cgroup_evicted() == before + 4 * cap
        assert s.burst(1) == (1, 0)
        assert s.drain_json(10) == (b"", 0) and s.cgroup_miss() == own
    finally:
        s.close()


def test_the_table_is_bounded_in_bytes() -> None:
    """Long paths (a user's deep delegated tree) fill the table's byte budget before its
    id count: entries are evicted to stay within it."""
    s = _core.Session(arena_pages=4096, queue_capacity=1024)
    try:
        path = b"/" + b"\x01" * (_core.CGROUP_PATH_MAX - 1)  # escaped as \u0001: 6 bytes each
        frag_len = len(_core.format_cgroup(path))
        n = (64 << 20) // frag_len + 100
        for cid in range(1, n + 1):
            s.cgroup_set(cid, path)
        assert s.cgroup_count() == (64 << 20) // frag_len
        assert s.cgroup_evicted() == n - s.cgroup_count()
    finally:
        s.close()


@needs_cgroup2
def test_a_run_reports_how_cgroups_were_resolved(cg_base: Path, tmp_path: Path,
                                                 pin_root: Path,
                                                 pipeline_proc: StartPipeline) -> None:
    """The pipeline's final statistics: handle lookups, no walk, and the table's size."""
    out = tmp_path / "ev.jsonl"
    pl = pipeline_proc("--sink", "jsonl", "--output", str(out), "--trigger", "tracepoint",
                       "--pin-dir", str(pin_root))
    work = tmp_path / "w"
    work.mkdir()
    comm = f"apcg-{secrets.token_hex(4)}"
    for i in range(3):
        cg = cg_base / f"r{i}"
        cg.mkdir()
        res = subprocess.run([sys.executable, "-c", ONE, str(cg), str(work / f"f{i}"), comm],
                             capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, res.stderr

    def mine() -> dict[str, Any]:
        return {os.path.basename(e["name"]): e["cgroup"] for e in read_jsonl(out)
                if os.path.dirname(e["name"]) == str(work)} if out.exists() else {}

    wait_for(lambda: len(mine()) == 3, 10, "the three events")
    assert mine() == {f"f{i}": os.fsdecode(expected_path(cg_base / f"r{i}")) for i in range(3)}
    assert pl.stop() == 0
    cg = pl.final()["cgroups"]
    # other processes on the machine add lookups of their own: at least these three
    assert cg["mode"] == "handle" and cg["walks"] == 0 and cg["lookups"] >= 3
    assert cg["lookups"] == cg["found"] + cg["gone"] + cg["unverified"]
    assert 3 <= cg["table"] <= _core.CGROUP_TABLE_MAX and cg["evicted"] == 0
