"""The pin root under /sys/fs/bpf, which every user can write to.

Things a user could plant are planted by user nobody (setpriv). Every test
takes a snapshot of everything the run must not touch (the planted trees,
the targets of planted links: type, mode, owner, content, listing) and
compares it after the run; a refused pin_dir is one line and exit 2."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    ROOT,
    PipelineProc,
    assert_one_line,
    needs_root,
    remove_tree,
    run_pin_names,
    run_pipeline,
    wait_for,
)
from hypothesis import given
from hypothesis import strategies as hs

pytestmark = needs_root

NOBODY = 65534
BPFFS = Path("/sys/fs/bpf")


def as_nobody(*cmd: str) -> None:
    subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                    *cmd], check=True, env={"PATH": os.environ["PATH"]})


def snapshot(*paths: Path) -> dict[str, Any]:
    """Type, mode, owner of every path and everything under it (no link
    followed); a link's target; a file's bytes (off bpffs)."""
    out: dict[str, Any] = {}

    def walk(p: Path) -> None:
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            out[str(p)] = None
            return
        rec: list[Any] = [stat.S_IFMT(st.st_mode), st.st_mode & 0o7777, st.st_uid, st.st_gid]
        if stat.S_ISLNK(st.st_mode):
            rec.append(os.readlink(p))
        elif stat.S_ISREG(st.st_mode) and not str(p).startswith(f"{BPFFS}/"):
            rec.append(p.read_bytes())
        elif stat.S_ISDIR(st.st_mode):
            names = sorted(os.listdir(p))
            rec.append(names)
            for n in names:
                walk(p / n)
        out[str(p)] = rec

    for p in paths:
        walk(p)
    return out


@pytest.fixture
def bpf_scratch() -> Iterator[Any]:
    """new(tag) -> a fresh path directly under /sys/fs/bpf, removed after the test."""
    made: list[Path] = []

    def new(tag: str) -> Path:
        p = BPFFS / f"ap-test-{tag}-{os.getpid()}-{time.monotonic_ns()}"
        made.append(p)
        return p

    yield new
    for p in made:
        remove_tree(p)


@pytest.fixture
def nobody_tmp() -> Iterator[Path]:
    """A directory on /tmp that user nobody owns and plants in."""
    d = Path(tempfile.mkdtemp(prefix="ap-nobody-"))
    os.chown(d, NOBODY, NOBODY)
    yield d
    remove_tree(d)


@pytest.fixture
def target(tmp_path: Path) -> Path:
    """What a planted link points at: a root-owned directory with a file in it,
    modes a chmod or unlink through the link would change."""
    d = tmp_path / "target"
    d.mkdir()
    d.chmod(0o755)
    (d / "secret").write_text("root's data\n")
    (d / "secret").chmod(0o640)
    (d / "12345").mkdir()
    return d


def dead_pid(k: int) -> str:
    """A pid no process can have: above the kernel's pid_max."""
    return str(int(Path("/proc/sys/kernel/pid_max").read_text()) + k)




def short_run(pin_dir: str, *extra: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "--trigger", "none", "--duration", "0.2",
         "--pin-dir", pin_dir, *extra],
        cwd=cwd, capture_output=True, text=True, timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT)})


# ---- the pin root itself ----

def test_root_a_user_made_is_refused(pin_root: Path, target: Path) -> None:
    as_nobody("mkdir", "-m", "0700", str(pin_root))
    as_nobody("mkdir", "-m", "0700", str(pin_root / dead_pid(1)))
    as_nobody("ln", "-s", str(target / "secret"), str(pin_root / dead_pid(1) / "arena"))
    as_nobody("ln", "-s", str(target), str(pin_root / dead_pid(2)))
    before = snapshot(pin_root, target)
    line = assert_one_line(short_run(str(pin_root)), str(pin_root), f"owned by uid {NOBODY}")
    assert "rm -r" in line
    assert snapshot(pin_root, target) == before


def test_root_that_is_a_link_is_refused(pin_root: Path, target: Path) -> None:
    as_nobody("ln", "-s", str(target), str(pin_root))
    before = snapshot(pin_root, target)
    assert_one_line(short_run(str(pin_root)), str(pin_root), "symbolic link")
    assert snapshot(pin_root, target) == before


def test_root_with_mode_0777_is_refused(pin_root: Path, target: Path) -> None:
    pin_root.mkdir()
    pin_root.chmod(0o777)
    run = pin_root / dead_pid(1)
    as_nobody("mkdir", "-m", "0700", str(run))
    as_nobody("ln", "-s", str(target / "secret"), str(run / "arena"))
    as_nobody("ln", "-s", str(target), str(run / "burst"))
    before = snapshot(pin_root, target)
    assert_one_line(short_run(str(pin_root)), str(pin_root), "mode 0777", "chmod 0700")
    assert snapshot(pin_root, target) == before


def test_root_that_is_a_regular_file_is_refused(tmp_path: Path, nobody_tmp: Path) -> None:
    as_nobody("sh", "-c", f"echo planted > {nobody_tmp}/file && chmod 0644 {nobody_tmp}/file")
    planted = tmp_path / "file"
    os.rename(nobody_tmp / "file", planted)  # it lands in a root-owned directory
    before = snapshot(tmp_path)
    assert_one_line(short_run(str(planted)), str(planted), "not a directory")
    assert snapshot(tmp_path) == before


def test_root_not_on_bpffs_is_refused(tmp_path: Path, nobody_tmp: Path) -> None:
    as_nobody("mkdir", "-m", "0700", f"{nobody_tmp}/pins")
    existing = tmp_path / "pins"
    os.rename(nobody_tmp / "pins", existing)
    missing = tmp_path / "missing"
    before = snapshot(tmp_path)
    assert_one_line(short_run(str(existing)), str(existing), "not on bpffs", "/sys/fs/bpf")
    assert_one_line(short_run(str(missing)), str(missing), "not on bpffs", "/sys/fs/bpf")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("pin_dir, words", [
    ("/proc/self/cwd", ["/proc/self is a symbolic link"]),
    ("/proc/1/cwd", ["/proc/1/cwd", "symbolic link"]),
    ("/proc/1/pins", ["/proc/1 is not on bpffs"]),
])
def test_root_under_proc_is_refused(nobody_tmp: Path, pin_dir: str, words: list[str]) -> None:
    # followed, /proc/self/cwd is the run's working directory: nobody's here
    before = snapshot(nobody_tmp)
    checkout = os.stat(ROOT)
    assert_one_line(short_run(pin_dir, cwd=nobody_tmp), pin_dir, *words)
    assert snapshot(nobody_tmp) == before
    after = os.stat(ROOT)
    assert (after.st_mode, after.st_uid) == (checkout.st_mode, checkout.st_uid)


def test_empty_pin_dir_leaves_the_working_directory_alone(nobody_tmp: Path) -> None:
    as_nobody("chmod", "0755", str(nobody_tmp))
    as_nobody("mkdir", f"{nobody_tmp}/{dead_pid(1)}")
    before = snapshot(nobody_tmp)
    assert_one_line(short_run("", cwd=nobody_tmp), "pin_dir is empty")
    assert_one_line(short_run("relative", cwd=nobody_tmp), "relative path")
    assert snapshot(nobody_tmp) == before


def test_root_through_a_linked_directory_is_refused(bpf_scratch: Any) -> None:
    real, link = bpf_scratch("real"), bpf_scratch("link")
    as_nobody("mkdir", "-m", "0755", str(real))
    as_nobody("ln", "-s", str(real), str(link))
    before = snapshot(real, link)
    assert_one_line(short_run(f"{link}/pins"), f"{link} is a symbolic link")
    assert snapshot(real, link) == before


def test_root_under_a_directory_a_user_owns_is_refused(bpf_scratch: Any) -> None:
    parent = bpf_scratch("parent")
    as_nobody("mkdir", "-m", "0755", str(parent))
    before = snapshot(parent)
    assert_one_line(short_run(f"{parent}/pins"), f"{parent} is owned by uid {NOBODY}")
    assert snapshot(parent) == before


def test_missing_root_is_made_0700_whatever_the_umask(pin_root: Path) -> None:
    res = subprocess.run(
        ["sh", "-c", 'umask 0777; exec "$@"', "sh", sys.executable, "-m", "pipeline",
         "--trigger", "none", "--duration", "0.2", "--pin-dir", str(pin_root)],
        cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    st = os.lstat(pin_root)
    assert stat.S_ISDIR(st.st_mode) and st.st_mode & 0o7777 == 0o700 and st.st_uid == 0
    assert os.listdir(pin_root) == []  # the run's own directory went with it


# ---- stale run directories ----

def _plant_in_root(root: Path, staging: Path, name: str, build: str,
                   root_owned: bool = False) -> None:
    """nobody builds `name` in staging (a shell snippet run in it); it then lands
    in the pin root, owned by root if asked, as if whoever planted it could."""
    as_nobody("sh", "-c", f"cd {staging} && {build}")
    if root_owned:
        for dirpath, dirnames, filenames in os.walk(staging / name):
            os.lchown(dirpath, 0, 0)
            for n in (*dirnames, *filenames):
                os.lchown(os.path.join(dirpath, n), 0, 0)
        os.lchown(staging / name, 0, 0)
    os.rename(staging / name, root / name)


def test_stale_clean_up_removes_only_what_a_dead_run_left(pin_root: Path, bpf_scratch: Any,
                                                          target: Path, tmp_path: Path) -> None:
    out = tmp_path / "ev.jsonl"
    first = PipelineProc("--sink", "jsonl", "--output", str(out), "--trigger", "none",
                         "--pin-dir", str(pin_root))
    first.proc.kill()  # SIGKILL: its pins stay
    first.wait()
    stale = pin_root / str(first.proc.pid)
    # the arena (queue and data-structure space), the burst program, and the
    # data-structure programs a pool worker attaches by
    assert set(os.listdir(stale)) == run_pin_names()
    staging = bpf_scratch("staging")
    as_nobody("mkdir", "-m", "0777", str(staging))
    d1, d2, d3, d4, d5 = (dead_pid(k) for k in range(1, 6))
    sec, tgt = target / "secret", target
    # nobody's own directory with links named like pins
    _plant_in_root(pin_root, staging, d1, f"mkdir -m 0700 {d1} && ln -s {sec} {d1}/arena "
                   f"&& ln -s {tgt} {d1}/burst")
    # a link in place of a run directory
    _plant_in_root(pin_root, staging, d2, f"ln -s {tgt} {d2}")
    # root-owned, mode 0700, but a link where a pin belongs
    _plant_in_root(pin_root, staging, d3, f"mkdir -m 0700 {d3} && ln -s {sec} {d3}/arena",
                   root_owned=True)
    # root-owned, mode 0700, with something this program never pins
    _plant_in_root(pin_root, staging, d4, f"mkdir -m 0700 {d4} && mkdir {d4}/notes",
                   root_owned=True)
    # the right shape but mode 0755
    _plant_in_root(pin_root, staging, d5, f"mkdir -m 0755 {d5}", root_owned=True)
    _plant_in_root(pin_root, staging, "not-a-pid", "mkdir -m 0700 not-a-pid")
    huge = "9" * 30  # digits, but no pid: must not reach kill()
    _plant_in_root(pin_root, staging, huge, f"mkdir -m 0700 {huge}", root_owned=True)
    planted = [pin_root / n for n in (d1, d2, d3, d4, d5, "not-a-pid", huge)]
    before = snapshot(*planted, target)

    second = PipelineProc("--sink", "jsonl", "--output", str(out), "--trigger", "none",
                          "--pin-dir", str(pin_root))
    assert not stale.exists()
    assert second.stop() == 0
    assert snapshot(*planted, target) == before
    assert sorted(os.listdir(pin_root)) == sorted(p.name for p in planted)
    removed = [ln for ln in second.lines if "removed stale pins" in ln]
    assert len(removed) == 1 and f"pid {first.proc.pid}" in removed[0]
    left = [ln for ln in second.lines if "left alone" in ln]
    assert len(left) == 1, second.stderr()
    for why in (f"{d1} (owned by uid {NOBODY})", f"{d2} (a symbolic link)",
                f"{d3} (arena is not a pinned object)", f"{d4} (holds 'notes'",
                f"{d5} (mode 0755)", "'not-a-pid' (not a run's name)",
                f"'{huge}' (not a run's name)"):
        assert why in left[0], (why, left[0])


def _map_ids_pinned(run_dir: Path) -> int:
    res = subprocess.run(["bpftool", "-j", "map", "show", "pinned", str(run_dir / "arena")],
                         capture_output=True, text=True, check=True)
    return int(json.loads(res.stdout)["id"])


def _map_exists(map_id: int) -> bool:
    res = subprocess.run(["bpftool", "map", "show", "id", str(map_id)],
                         capture_output=True, text=True)
    return res.returncode == 0


def test_killed_stress_run_leaves_pins_the_next_run_removes(pin_root: Path) -> None:
    cfg = str(ROOT / "configs/stress-hash.toml")
    killed = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "stress", "--config", cfg, "--duration", "60",
         "--pin-dir", str(pin_root)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    run_dir = pin_root / str(killed.pid)
    try:
        wait_for(lambda: (run_dir / "ds_run_evq").exists(), 60, "the stress run's pins")
        arena_id = _map_ids_pinned(run_dir)
    finally:
        os.killpg(killed.pid, signal.SIGKILL)  # the runner and its workers, as kill -9 does
        killed.wait(30)
        assert killed.stderr is not None
        killed.stderr.close()
    pins = sorted(os.listdir(run_dir))
    assert "arena" in pins and "ds_run_hash" in pins and "ds_trim" in pins and len(pins) == 11, pins
    assert _map_exists(arena_id)  # the pin holds the arena after its process is gone

    res = subprocess.run(
        [sys.executable, "-m", "pipeline", "stress", "--config", cfg, "--duration", "0.3",
         "--ops", "20000", "--pin-dir", str(pin_root), "--format", "json"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["ok"]
    assert f"removed stale pins of a run that is gone (pid {killed.pid})" in res.stderr
    assert os.listdir(pin_root) == []
    wait_for(lambda: not _map_exists(arena_id), 10, "the arena to be freed")


def test_stress_refuses_a_bad_pin_dir(pin_root: Path, target: Path) -> None:
    as_nobody("ln", "-s", str(target), str(pin_root))
    before = snapshot(pin_root, target)
    res = subprocess.run(
        [sys.executable, "-m", "pipeline", "stress", "--config",
         str(ROOT / "configs/stress-hash.toml"), "--duration", "0.3", "--pin-dir", str(pin_root)],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert_one_line(res, str(pin_root), "symbolic link")
    assert snapshot(pin_root, target) == before


def test_burst_refuses_a_planted_run_dir(pin_root: Path, target: Path) -> None:
    pl = PipelineProc("--trigger", "none", "--pin-dir", str(pin_root))
    try:
        fake = pin_root / dead_pid(1)
        staging = pin_root.parent / f"{pin_root.name}-staging"
        as_nobody("mkdir", "-m", "0700", str(staging))
        try:
            _plant_in_root(pin_root, staging, fake.name,
                           f"mkdir -m 0700 {fake.name} && ln -s {target} {fake.name}/burst",
                           root_owned=True)
        finally:
            remove_tree(staging)
        before = snapshot(fake, target)
        res = run_pipeline("burst", "--events", "1", "--pin-dir", str(fake))
        assert_one_line(res, str(fake), "burst is not a pinned object")
        assert snapshot(fake, target) == before
    finally:
        assert pl.stop() == 0


def test_live_runs_finds_a_running_pipeline_by_its_pins(pin_root: Path) -> None:
    from pipeline.pins import PinRoot

    pl = PipelineProc("--trigger", "none", "--pin-dir", str(pin_root))
    try:
        with PinRoot.open(str(pin_root), create=False) as root:
            assert root.live_runs("burst") == [f"{pin_root}/{pl.proc.pid}"]
            # its arena holds the data-structure space: it pins the programs too
            assert root.live_runs("ds_run_hash") == [f"{pin_root}/{pl.proc.pid}"]
            assert root.live_runs("ds_run_nosuch") == []
    finally:
        assert pl.stop() == 0
    with PinRoot.open(str(pin_root), create=False) as root:
        assert root.live_runs("burst") == []


@given(hs.text(max_size=24))
def test_only_canonical_pids_name_runs(name: str) -> None:
    from pipeline.pins import _run_pid

    pid = _run_pid(name)
    canonical = (name.isascii() and name.isdigit() and not name.startswith("0")
                 and int(name) < 2**31)
    assert pid == (int(name) if canonical else None)
