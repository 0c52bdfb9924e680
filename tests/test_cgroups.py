"""cgroup_id, cgroup and container_id on real events: cgroup v2 children this test makes
under the cgroup2 mount, real processes moved into them (through cgroup.procs) creating
files, the pipeline capturing them. The expected id is the directory's inode number (what
the kernel's cgroup id is on cgroup v2) and the expected path is what the process itself
reads in /proc/self/cgroup, so neither comes from the code under test."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import StartPipeline, needs_root, parse_jsonl, read_jsonl, wait_for
from helpers.cgroup_dirs import MOUNT, needs_cgroup2

from pipeline import _core
from pipeline.cgroups import Cgroups

pytestmark = needs_root


# Moves itself into the cgroup directory argv[1] (an O_WRONLY open: no O_CREAT, so the move
# itself is no event), creates the files argv[3:] in directory argv[2], and prints its pid,
# the cgroup line of /proc/self/cgroup and its mount namespace.
CHILD = r"""
import json, os, sys
fd = os.open(os.path.join(sys.argv[1], "cgroup.procs"), os.O_WRONLY)
os.write(fd, b"0")
os.close(fd)
for name in sys.argv[3:]:
    os.close(os.open(os.path.join(sys.argv[2], name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
with open("/proc/self/cgroup", "rb") as f:
    cg = [ln[3:] for ln in f.read().splitlines() if ln.startswith(b"0::")][0]
print(json.dumps({"pid": os.getpid(), "cgroup": cg.decode("utf-8", "surrogateescape"),
                  "mnt_ns": os.stat("/proc/self/ns/mnt").st_ino}))
"""


def in_cgroup(cg: Path, work: Path, *names: str, pre: tuple[str, ...] = ()) -> dict[str, Any]:
    res = subprocess.run([*pre, sys.executable, "-c", CHILD, str(cg), str(work), *names],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    info: dict[str, Any] = json.loads(res.stdout)
    return info


def expected_path(cg: Path) -> str:
    """The cgroup's path from the mount's root, as /proc/PID/cgroup gives it."""
    assert MOUNT is not None
    rel = os.path.relpath(cg, os.fsdecode(MOUNT.point))
    root = os.fsdecode(MOUNT.root).rstrip("/")
    return f"{root}/{rel}"


def capture_events(out: Path, work: Path, names: set[str]) -> dict[str, dict[str, Any]]:
    """The events of the files `names` in `work` (the name as the creator gave it)."""
    def mine() -> dict[str, dict[str, Any]]:
        if not out.exists():
            return {}
        return {os.path.basename(e["name"]): e for e in read_jsonl(out)
                if os.path.dirname(e["name"]) == str(work)
                and os.path.basename(e["name"]) in names}

    wait_for(lambda: len(mine()) == len(names), 10, f"events of {sorted(names)}")
    return mine()


@pytest.fixture
def jsonl_run(tmp_path: Path, pin_root: Path, pipeline_proc: StartPipeline) -> Iterator[Path]:
    out = tmp_path / "ev.jsonl"
    pl = pipeline_proc("--sink", "jsonl", "--output", str(out), "--trigger", "tracepoint",
                       "--pin-dir", str(pin_root))
    yield out
    assert pl.stop() == 0


def cg_fields(e: dict[str, Any]) -> tuple[Any, ...]:
    """The cgroup keys; the container's two are there for a container only."""
    assert ("container_runtime" in e) == ("container_id" in e), e
    return e["cgroup_id"], e["cgroup"], e.get("container_runtime"), e.get("container_id")


@needs_cgroup2
def test_a_child_cgroup_gives_its_id_and_path(cg_base: Path, jsonl_run: Path,
                                              tmp_path: Path) -> None:
    cg = cg_base / "plain child"  # a space: the path goes out as given
    cg.mkdir()
    info = in_cgroup(cg, tmp_path, "f1", "f2", "f3")
    assert info["cgroup"] == expected_path(cg)
    evs = capture_events(jsonl_run, tmp_path, {"f1", "f2", "f3"})
    ino = os.stat(cg).st_ino
    assert {n: (e["pid"], *cg_fields(e)) for n, e in evs.items()} == {
        n: (info["pid"], ino, info["cgroup"], None, None) for n in ("f1", "f2", "f3")}


@needs_cgroup2
def test_container_layouts_in_real_cgroups(cg_base: Path, jsonl_run: Path,
                                           tmp_path: Path) -> None:
    ids = {k: secrets.token_hex(32) for k in ("docker", "dockerfs", "cri", "crio", "podman",
                                              "conmon")}
    cases = {
        "docker": (f"system.slice/docker-{ids['docker']}.scope", ("docker", ids["docker"])),
        "dockerfs": (f"docker/{ids['dockerfs']}", ("docker", ids["dockerfs"])),
        "cri": (f"kubepods.slice/kubepods-pod1.slice/cri-containerd-{ids['cri']}.scope",
                ("containerd", ids["cri"])),
        "crio": (f"kubepods.slice/kubepods-pod1.slice/crio-{ids['crio']}.scope",
                 ("cri-o", ids["crio"])),
        "podman": (f"machine.slice/libpod-{ids['podman']}.scope", ("podman", ids["podman"])),
        "conmon": (f"machine.slice/libpod-conmon-{ids['conmon']}.scope", (None, None)),
        "nspawn": ("machine.slice/systemd-nspawn@web\\x2d1.service/payload",
                   ("systemd-nspawn", "web-1")),
        "supervisor": ("machine.slice/systemd-nspawn@web\\x2d1.service/supervisor",
                       (None, None)),
    }
    want = {}
    for name, (rel, (runtime, cid)) in cases.items():
        cg = cg_base / rel
        cg.mkdir(parents=True, exist_ok=True)
        info = in_cgroup(cg, tmp_path, name)
        assert info["cgroup"] == expected_path(cg)
        want[name] = (os.stat(cg).st_ino, info["cgroup"], runtime, cid)
    evs = capture_events(jsonl_run, tmp_path, set(cases))
    assert {n: cg_fields(e) for n, e in evs.items()} == want


@needs_cgroup2
def test_a_process_in_another_mount_namespace(cg_base: Path, jsonl_run: Path,
                                              tmp_path: Path) -> None:
    cg = cg_base / f"docker-{'ab' * 32}.scope"
    cg.mkdir()
    # nothing is mounted inside, so propagation stays as it is: making "/" private needs
    # "/" to be a mount, which it is not in a chroot (CI's fresh root)
    info = in_cgroup(cg, tmp_path, "in-ns", pre=("unshare", "-m", "--propagation", "unchanged"))
    assert info["mnt_ns"] != os.stat("/proc/self/ns/mnt").st_ino  # it really is another one
    evs = capture_events(jsonl_run, tmp_path, {"in-ns"})
    assert cg_fields(evs["in-ns"]) == (os.stat(cg).st_ino, expected_path(cg), "docker", "ab" * 32)
    assert evs["in-ns"]["pid"] == info["pid"]


@needs_cgroup2
@pytest.mark.parametrize("direct", [True, False], ids=["handle", "walk"])
def test_a_removed_cgroup_is_unknown(cg_base: Path, tmp_path: Path, direct: bool) -> None:
    """A cgroup gone before the pipeline looked it up: its events keep the id the kernel
    gave them and say unknown; a cgroup still there beside it is named. The drain stops at
    each id its table lacks until resolve() has put it in, by handle or (the fallback
    where handles are refused) from a walk of the tree."""
    s = _core.Session(arena_pages=4096, queue_capacity=1024)
    try:
        s.attach("tracepoint")
        s.set_filter(ignore_pid=os.getpid())
        s.enable(True)
        gone, kept = cg_base / "gone", cg_base / "kept"
        gone.mkdir()
        kept.mkdir()
        gone_id, kept_id = os.stat(gone).st_ino, os.stat(kept).st_ino
        in_cgroup(gone, tmp_path, "in-gone")
        in_cgroup(kept, tmp_path, "in-kept")
        gone.rmdir()
        cgroups = Cgroups.open(s, direct=direct)
        try:
            assert cgroups.direct == direct
            if not direct:
                assert gone_id not in cgroups.paths and kept_id in cgroups.paths

            async def drain() -> list[dict[str, Any]]:
                got: list[dict[str, Any]] = []
                while not {"in-gone", "in-kept"} <= {os.path.basename(e["name"]) for e in got}:
                    data, n = s.drain_json(4096)
                    got += parse_jsonl(data)
                    miss = s.cgroup_miss()
                    if miss:
                        await cgroups.resolve(miss)
                    elif not n:
                        await asyncio.sleep(0.01)
                return got

            evs = {os.path.basename(e["name"]): e
                   for e in asyncio.run(asyncio.wait_for(drain(), 10))}
            assert (cgroups.counters.walks == 0) == direct
        finally:
            cgroups.close()
        assert cg_fields(evs["in-gone"]) == (gone_id, None, None, None)
        assert cg_fields(evs["in-kept"]) == (kept_id, expected_path(kept), None, None)
    finally:
        s.close()


def own_cgroup_ino() -> int:
    """The inode number of this process's cgroup directory (the kernel's id for it)."""
    assert MOUNT is not None
    with open("/proc/self/cgroup", "rb") as f:
        path = next(ln[3:] for ln in f.read().splitlines() if ln.startswith(b"0::"))
    rel = path[len(MOUNT.root.rstrip(b"/")):].lstrip(b"/")
    return os.stat(os.path.join(MOUNT.point, rel)).st_ino


@needs_cgroup2
def test_the_drain_stops_at_an_unknown_id() -> None:
    """Records of an id the table lacks are not formatted, nor taken off the queue, until
    the id is put in; then all of them come out with its fields."""
    s = _core.Session(arena_pages=4096, queue_capacity=1024)
    try:
        s.enable(True)
        s.cgroup_resolve(True)
        assert s.burst(5) == (5, 0)
        assert s.drain_json(100) == (b"", 0)
        own = s.cgroup_miss()
        assert own == own_cgroup_ino()
        assert s.stats()["queued"] == 5
        s.cgroup_set(own, b"/x\xff", "podman", "c1")
        data, n = s.drain_json(100)
        evs = parse_jsonl(data)
        assert n == 5 and s.cgroup_miss() == 0
        assert [(e["seq"], e["cgroup_id"], e["cgroup"], e["cgroup_b64"], e["container_runtime"],
                 e["container_id"]) for e in evs] == [
            (i, own, "/x\ufffd", "L3j/", "podman", "c1") for i in range(5)]
    finally:
        s.close()


@pytest.mark.parametrize("seed", range(3))
def test_the_table_against_a_model(seed: int) -> None:
    """put/drop on the C table (open addressing, removal by shifting runs back) against a
    Python set, over enough ids to grow it several times."""
    import random

    rnd = random.Random(seed)
    s = _core.Session(arena_pages=4096, queue_capacity=1024)
    try:
        model: set[int] = set()
        for _ in range(20000):
            cid = rnd.randrange(1, 3000)
            if rnd.random() < 0.6:
                s.cgroup_set(cid, b"/p%d" % cid)
                model.add(cid)
            else:
                assert s.cgroup_drop(cid) == (cid in model)
                model.discard(cid)
            assert s.cgroup_count() == len(model)
        for cid in range(1, 3000):
            assert s.cgroup_drop(cid) == (cid in model)
        assert s.cgroup_count() == 0
    finally:
        s.close()
