"""The jsonl sink as root against what another user plants: links, files, hard links and
directories at the output's name, at its rotation names and on its directory path.

Everything is planted by a real unprivileged user (nobody, through setpriv). Every test
snapshots what is not the run's own (the victim files' content, mode and owner; every entry
of the directories where things were planted) before and after, and asserts it is unchanged.
Cases run in directories that are *not* sticky, so the kernel's fs.protected_symlinks and
fs.protected_regular (which cover sticky world-writable directories only) play no part: what
is tested is the pipeline's own checks. A sticky /tmp-like directory is covered as well.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    PipelineProc,
    assert_one_line,
    count_lines,
    create_files,
    needs_root,
    read_jsonl,
    run_pipeline,
    wait_for,
)

from pipeline.sinks import Batch, SinkError
from pipeline.sinks.jsonl import JsonlSink

pytestmark = needs_root
NOBODY = 65534
SETPRIV = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
VICTIM_DATA = b"root's data, not events\n"


def as_nobody(*cmd: str) -> None:
    res = subprocess.run([*SETPRIV, *cmd], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, (cmd, res.stderr)


# -- what must not change --------------------------------------------------------------------


def entry(p: Path) -> tuple[Any, ...]:
    st = p.lstat()
    if stat.S_ISLNK(st.st_mode):
        body: Any = os.readlink(p)
    elif stat.S_ISREG(st.st_mode):
        body = p.read_bytes()
    elif stat.S_ISDIR(st.st_mode):
        body = sorted((c.name, entry(c)) for c in p.iterdir())
    else:
        body = None
    return (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
            st.st_nlink, body)


def snapshot(paths: list[Path], own: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Type, mode, owner, link count and content of each path (directories: of every entry,
    recursively), leaving out entries named in `own`: the run's own files."""
    out: dict[str, Any] = {}
    for p in paths:
        if p.is_dir() and not p.is_symlink():
            st = p.lstat()
            out[str(p)] = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, sorted(
                (c.name, entry(c)) for c in p.iterdir() if c.name not in own))
        else:
            out[str(p)] = entry(p) if os.path.lexists(p) else None
    return out


@dataclass
class Scene:
    """base/victims (root's files: the targets), base/d (where nobody plants)."""

    base: Path
    victims: Path
    d: Path

    @property
    def out(self) -> Path:
        return self.d / "events.jsonl"

    def victim(self, name: str = "secret", mode: int = 0o644) -> Path:
        v = self.victims / name
        v.write_bytes(VICTIM_DATA)
        v.chmod(mode)
        return v

    def config(self, shared: bool) -> list[str]:
        if not shared:
            return []
        cfg = self.base / "shared.toml"
        cfg.write_text("[sink.jsonl]\nallow_shared_dir = true\n")
        return ["--config", str(cfg)]


@pytest.fixture
def scene() -> Iterator[Scene]:
    # Under /tmp itself, not pytest's 0700 tmp_path, so that nobody can reach it.
    base = Path(tempfile.mkdtemp(prefix="ap-secfiles-", dir="/tmp"))
    base.chmod(0o755)
    victims, d = base / "victims", base / "d"
    victims.mkdir(mode=0o755)
    d.mkdir()
    try:
        yield Scene(base, victims, d)
    finally:
        shutil.rmtree(base)


# The planted directory's kinds. "locked": nobody planted while it was open to everyone,
# then root closed it (0755): a safe directory holding what nobody left. "shared": 0777,
# not sticky, accepted with allow_shared_dir. "sticky": 1777 like /tmp, accepted as is.
DIR_MODES = {"locked": 0o777, "shared": 0o777, "sticky": 0o1777}


def open_dir(scene: Scene, kind: str) -> None:
    scene.d.chmod(DIR_MODES[kind])


def close_dir(scene: Scene, kind: str) -> None:
    if kind == "locked":
        scene.d.chmod(0o755)




# -- at start: the real pipeline refuses with one line and exit 2 ------------------------------


def plant_at_output(scene: Scene, what: str) -> tuple[list[Path], str]:
    """Plant `what` at the output's name as nobody; returns the victims and the words the
    refusal must contain."""
    out = str(scene.out)
    if what == "symlink":
        v = scene.victim()
        as_nobody("ln", "-s", str(v), out)
        return [v], "symbolic link"
    if what == "dangling_symlink":
        # Following it would create a root-owned file where nobody chose.
        as_nobody("ln", "-s", str(scene.victims / "created-by-root"), out)
        return [scene.victims / "created-by-root"], "symbolic link"
    if what == "foreign_file":
        as_nobody("sh", "-c", f"printf 'mine\\n' > {out} && chmod 0644 {out}")
        return [scene.out], f"owned by uid {NOBODY}"
    if what == "hard_link":
        v = scene.victim("shared-rw", 0o666)  # fs.protected_hardlinks allows linking it
        as_nobody("ln", str(v), out)
        return [v], "2 hard links"
    raise AssertionError(what)


@pytest.mark.parametrize("kind", ["locked", "shared", "sticky"])
@pytest.mark.parametrize("what", ["symlink", "dangling_symlink", "foreign_file", "hard_link"])
def test_start_refuses_what_nobody_planted_at_the_output(scene: Scene, pin_root: Path,
                                                         kind: str, what: str) -> None:
    open_dir(scene, kind)
    victims, needle = plant_at_output(scene, what)
    close_dir(scene, kind)
    before = snapshot([*victims, scene.victims, scene.d])
    res = run_pipeline(*scene.config(kind == "shared"), "--sink", "jsonl", "--output",
                       str(scene.out), "--duration", "1", "--pin-dir", str(pin_root))
    assert snapshot([*victims, scene.victims, scene.d]) == before
    line = assert_one_line(res, f"refusing output {scene.out}", needle)
    assert "; remove it or " in line, line


@pytest.mark.parametrize("owner", ["root_0777", "nobody_0755", "root_0775_group_nogroup"])
def test_start_refuses_a_directory_others_can_change(scene: Scene, pin_root: Path,
                                                     owner: str) -> None:
    if owner == "root_0777":
        scene.d.chmod(0o777)
    elif owner == "nobody_0755":
        os.chown(scene.d, NOBODY, NOBODY)
    else:
        os.chown(scene.d, 0, NOBODY)
        scene.d.chmod(0o775)
    before = snapshot([scene.d, scene.victims])
    res = run_pipeline("--sink", "jsonl", "--output", str(scene.out), "--duration", "1",
                       "--pin-dir", str(pin_root))
    assert snapshot([scene.d, scene.victims]) == before
    assert_one_line(res, f"refusing output {scene.out}", f"directory {scene.d}",
                    "allow_shared_dir = true")


def test_start_refuses_a_path_through_another_users_directory(scene: Scene,
                                                              pin_root: Path) -> None:
    # /base/home is nobody's; output /base/home/logs/events.jsonl where logs was root's
    # directory until nobody swapped it for a link to root's victims directory, whose
    # events.jsonl is root's regular file: appending to it would pass every file check.
    home = scene.base / "home"
    home.mkdir(mode=0o755)
    os.chown(home, NOBODY, NOBODY)
    v = scene.victim("events.jsonl")
    as_nobody("ln", "-s", str(scene.victims), str(home / "logs"))
    before = snapshot([v, scene.victims, home])
    res = run_pipeline("--sink", "jsonl", "--output", str(home / "logs" / "events.jsonl"),
                       "--duration", "1", "--pin-dir", str(pin_root))
    assert snapshot([v, scene.victims, home]) == before
    assert_one_line(res, "refusing output", f"directory {home} is owned by uid {NOBODY}")


def test_links_root_owns_on_the_path_are_followed(scene: Scene, pin_root: Path) -> None:
    # A legitimate layout (as /var/run -> /run): the link and the directories are root's.
    real = scene.base / "real"
    real.mkdir(mode=0o755)
    (scene.base / "alias").symlink_to("real")
    res = run_pipeline("--sink", "jsonl", "--output", str(scene.base / "alias" / "ev.jsonl"),
                       "--duration", "0.3", "--pin-dir", str(pin_root))
    assert res.returncode == 0, res.stderr
    st = (real / "ev.jsonl").stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0


# -- mid-run, under the real pipeline ----------------------------------------------------------

def refusals(pl: PipelineProc) -> list[str]:
    return [ln for ln in pl.lines
            if ln.startswith("pipeline: sink jsonl: refusing to reopen or rotate")]


def check_failed_run(pl: PipelineProc, stdout_file: Path, out: Path, needle: str) -> None:
    """The jsonl sink failed with one line naming `needle`; stdout went on; every event is
    accounted for, and the run's own file holds exactly what was counted delivered."""
    assert pl.stop() == 0, pl.stderr()
    assert "Traceback" not in pl.stderr(), pl.stderr()
    final = pl.final()
    js = final["sinks"]["jsonl"]
    assert js["failed"] and needle in js["failed"], js
    assert js["delivered"] + js["dropped_total"] == final["read"]
    assert js["dropped"]["write_failed"] > 0
    assert len(read_jsonl(out)) == js["delivered"]
    assert final["sinks"]["stdout"]["delivered"] == final["read"] == count_lines(stdout_file)
    assert len(refusals(pl)) == 1 and needle in refusals(pl)[0], pl.stderr()


def test_rotation_refuses_a_link_planted_at_path_1(scene: Scene, tmp_path: Path,
                                                   pin_root: Path) -> None:
    v = scene.victim()
    open_dir(scene, "locked")
    as_nobody("ln", "-s", str(v), str(scene.d / "events.jsonl.1"))
    close_dir(scene, "locked")
    work = tmp_path / "w"
    work.mkdir()
    stdout_file = tmp_path / "stdout.jsonl"
    own = frozenset({"events.jsonl"})
    before = snapshot([v, scene.victims, scene.d], own)
    with open(stdout_file, "wb") as so:
        pl = PipelineProc("--sink", "jsonl,stdout", "--output", str(scene.out),
                          "--rotate-bytes", "4096", "--pin-dir", str(pin_root), stdout=so)
        create_files(work, "a", 5)
        wait_for(lambda: scene.out.exists() and scene.out.stat().st_size > 0, 20, "a batch")
        create_files(work, "b", 200)  # ~70 KB of events: the next batch must rotate
        wait_for(lambda: bool(refusals(pl)), 20, "the refusal")
        create_files(work, "c", 50)  # after the refusal: stdout only
        wait_for(lambda: count_lines(stdout_file) >= 255, 20, "stdout events")
        check_failed_run(pl, stdout_file, scene.out, "events.jsonl.1 is a symbolic link")
    assert snapshot([v, scene.victims, scene.d], own) == before


@pytest.mark.parametrize("swap", ["symlink", "foreign_file"])
def test_output_replaced_while_running_is_refused(scene: Scene, tmp_path: Path,
                                                  pin_root: Path, swap: str) -> None:
    open_dir(scene, "shared")
    v = scene.victim()
    before = snapshot([v, scene.victims])
    work = tmp_path / "w"
    work.mkdir()
    stdout_file = tmp_path / "stdout.jsonl"
    planted = scene.d / "planted"
    with open(stdout_file, "wb") as so:
        pl = PipelineProc(*scene.config(True), "--sink", "jsonl,stdout", "--output",
                          str(scene.out), "--pin-dir", str(pin_root), stdout=so)
        create_files(work, "a", 20)
        wait_for(lambda: count_lines(scene.out) >= 20, 20, "events in the file")
        if swap == "symlink":
            as_nobody("ln", "-s", str(v), str(planted))
        else:
            as_nobody("sh", "-c", f"printf 'mine\\n' > {planted} && chmod 0644 {planted}")
        as_nobody("mv", "-T", str(planted), str(scene.out))  # over root's file
        create_files(work, "b", 30)
        wait_for(lambda: bool(refusals(pl)), 20, "the refusal")
        wait_for(lambda: count_lines(stdout_file) >= 50, 20, "stdout events")
        assert pl.stop() == 0, pl.stderr()
    needle = "symbolic link" if swap == "symlink" else f"owned by uid {NOBODY}"
    assert len(refusals(pl)) == 1 and needle in refusals(pl)[0], pl.stderr()
    final = pl.final()
    js = final["sinks"]["jsonl"]
    assert js["delivered"] + js["dropped_total"] == final["read"] == count_lines(stdout_file)
    # The events written before the swap went to root's file, which nobody's rename
    # unlinked (a directory others can write allows that): they count as delivered.
    assert js["delivered"] >= 20 and js["dropped"]["write_failed"] >= 30
    assert snapshot([v, scene.victims]) == before
    # The directory holds nothing but nobody's entry, as nobody left it.
    assert [p.name for p in scene.d.iterdir()] == ["events.jsonl"]
    st = scene.out.lstat()
    assert (st.st_uid, st.st_gid, st.st_nlink) == (NOBODY, NOBODY, 1)
    if swap == "symlink":
        assert stat.S_ISLNK(st.st_mode) and os.readlink(scene.out) == str(v)
    else:
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o644
        assert scene.out.read_bytes() == b"mine\n"


# -- rotation, driven in-process ---------------------------------------------------------------


def batch(first: int, n: int) -> Batch:
    data = b"".join(b'{"seq":%d,"pad":"%s"}\n' % (first + i, b"x" * 40) for i in range(n))
    return Batch(data, n)


def plant_rotation_name(scene: Scene, name: str, what: str) -> list[Path]:
    p = str(scene.d / name)
    if what == "symlink":
        v = scene.victim()
        as_nobody("ln", "-s", str(v), p)
        return [v]
    if what == "directory":
        as_nobody("sh", "-c", f"mkdir {p} && printf 'mine\\n' > {p}/inside")
        return []
    if what == "foreign_file":
        as_nobody("sh", "-c", f"printf 'mine\\n' > {p}")
        return []
    raise AssertionError(what)


@pytest.mark.parametrize("kind", ["shared", "sticky"])
@pytest.mark.parametrize("what", ["symlink", "directory", "foreign_file"])
@pytest.mark.parametrize(("keep", "slot"), [(1, 1), (3, 1), (3, 2), (3, 3)])
def test_rotation_names_planted_mid_run(scene: Scene, kind: str, what: str, keep: int,
                                        slot: int) -> None:
    open_dir(scene, kind)
    reports: list[str] = []
    sink = JsonlSink(output=str(scene.out), rotate_bytes=2000, rotate_keep=keep,
                     allow_shared_dir=kind == "shared")
    sink.reporter = reports.append
    own = frozenset({"events.jsonl", *(f"events.jsonl.{i}" for i in range(1, keep + 1))}
                    - {f"events.jsonl.{slot}"})
    state: dict[str, Any] = {}

    async def scenario() -> None:
        await sink.start()
        await sink.write(batch(0, 20))  # ~1.2 KB
        victims = plant_rotation_name(scene, f"events.jsonl.{slot}", what)
        state["victims"] = victims
        state["before"] = snapshot([*victims, scene.victims, scene.d], own)
        await sink.write(batch(20, 20))  # would pass 2000 bytes: rotates, or must refuse
        await sink.write(batch(40, 20))
        await sink.close()

    asyncio.run(scenario())
    victims = state["victims"]
    assert snapshot([*victims, scene.victims, scene.d], own) == state["before"]
    assert sink.stats.as_dict() == {
        "delivered": 20, "dropped": {"write_failed": 40}, "dropped_total": 40,
        "failed": sink.stats.failed}
    assert len(reports) == 1 and "refusing to reopen or rotate" in reports[0], reports
    assert f"events.jsonl.{slot} is" in reports[0], reports
    assert [e["seq"] for e in read_jsonl(scene.out)] == list(range(20))
    assert stat.S_IMODE(scene.out.stat().st_mode) == 0o600


def test_rotate_keep_zero_refuses_to_remove_a_link_swapped_in(scene: Scene) -> None:
    open_dir(scene, "shared")
    v = scene.victim()
    reports: list[str] = []
    sink = JsonlSink(output=str(scene.out), rotate_bytes=2000, rotate_keep=0,
                     allow_shared_dir=True)
    sink.reporter = reports.append
    state: dict[str, Any] = {}

    async def scenario() -> None:
        await sink.start()
        await sink.write(batch(0, 20))
        as_nobody("ln", "-s", str(v), str(scene.d / "planted"))
        as_nobody("mv", "-T", str(scene.d / "planted"), str(scene.out))
        state["before"] = snapshot([v, scene.victims, scene.d])
        # The watch reports the swap; the reopen refuses before rotation could remove it.
        await sink.write(batch(20, 20))
        await sink.close()

    asyncio.run(scenario())
    assert snapshot([v, scene.victims, scene.d]) == state["before"]
    assert sink.stats.delivered == 20 and sink.stats.dropped == {"write_failed": 20}
    assert len(reports) == 1 and "symbolic link" in reports[0], reports


def test_directory_that_becomes_shared_mid_run_is_refused(scene: Scene) -> None:
    reports: list[str] = []
    sink = JsonlSink(output=str(scene.out), rotate_bytes=2000, rotate_keep=2)
    sink.reporter = reports.append
    state: dict[str, Any] = {}

    async def scenario() -> None:
        await sink.start()
        await sink.write(batch(0, 20))
        scene.d.chmod(0o777)  # an operator's mistake: from now on anyone can plant here
        state["before"] = snapshot([scene.d, scene.victims])
        await sink.write(batch(20, 20))  # the rotation checks the directory again
        await sink.close()

    asyncio.run(scenario())
    assert snapshot([scene.d, scene.victims]) == state["before"]
    assert sink.stats.delivered == 20 and sink.stats.dropped == {"write_failed": 20}
    assert len(reports) == 1 and "is writable by other users" in reports[0], reports


def test_rotation_stays_in_the_directory_opened_at_start(scene: Scene) -> None:
    # base/shared is 0777 (accepted with allow_shared_dir); its logs directory is swapped by
    # nobody for a link to root's victims directory, which holds an events.jsonl of its own.
    shared = scene.base / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    logs = shared / "logs"
    logs.mkdir(mode=0o755)
    v = scene.victim("events.jsonl")
    reports: list[str] = []
    sink = JsonlSink(output=str(logs / "events.jsonl"), rotate_bytes=2000, rotate_keep=2,
                     allow_shared_dir=True)
    sink.reporter = reports.append
    state: dict[str, Any] = {}

    async def scenario() -> None:
        await sink.start()
        await sink.write(batch(0, 20))
        as_nobody("mv", "-T", str(logs), str(shared / "moved"))
        as_nobody("ln", "-s", str(scene.victims), str(logs))
        state["before"] = snapshot([v, scene.victims])
        for i in range(1, 4):
            await sink.write(batch(20 * i, 20))  # each rotates
        await sink.close()

    asyncio.run(scenario())
    assert reports == [] and sink.stats.delivered == 80, (reports, sink.stats.as_dict())
    assert snapshot([v, scene.victims]) == state["before"]
    moved = shared / "moved"
    assert sorted(p.name for p in moved.iterdir()) == [
        "events.jsonl", "events.jsonl.1", "events.jsonl.2"]
    assert (moved / "events.jsonl").read_bytes() == batch(60, 20).data
    assert (moved / "events.jsonl.1").read_bytes() == batch(40, 20).data


def test_in_process_start_refusals_are_one_line(scene: Scene) -> None:
    open_dir(scene, "shared")
    v = scene.victim()
    as_nobody("ln", "-s", str(v), str(scene.out))
    before = snapshot([v, scene.victims, scene.d])
    for shared in (False, True):
        with pytest.raises(SinkError) as ei:
            asyncio.run(JsonlSink(output=str(scene.out), allow_shared_dir=shared).start())
        msg = str(ei.value)
        assert "\n" not in msg and msg.startswith(f"refusing output {scene.out}: "), msg
        assert ("writable by other users" in msg) if not shared else ("symbolic link" in msg)
    assert snapshot([v, scene.victims, scene.d]) == before
