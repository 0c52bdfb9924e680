"""`path`: the absolute path of what was created, resolved in the kernel (bpf/path.bpf.h),
checked against real files made by real processes: relative to the working directory and to
a directory descriptor, with `..`, through a bind mount, inside a mount namespace and a
chroot, past the resolver's bounds, and with names that are not UTF-8."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import CHROOTED, StartPipeline, needs_root, read_jsonl, wait_for

from pipeline import _core

pytestmark = needs_root
NEEDS_ROOT_MOUNT = pytest.mark.skipif(
    CHROOTED, reason="runs under a chroot, whose / is no mount: a new mount namespace cannot "
                     "make it private, so its tmpfs would show outside; runs outside a chroot")
NEEDS_WHOLE_TREE = pytest.mark.skipif(
    CHROOTED, reason="runs under a chroot: it counts the walk's steps up to the top of the "
                     "mount tree, which goes on past the chroot through mounts this process "
                     "cannot see; runs outside a chroot")

PATH_CAP = _core.PATH_CAP  # 512: bytes of the record's path field
PATH_DEPTH = 64  # include/event.h AP_PATH_DEPTH: steps of the walk

# Runs the creator's operations (a JSON list on argv[1]) and prints {"pid": ..., "mnt_ns":
# the inode number of its mount namespace at the end}. Paths are hex bytes.
CREATOR = r"""
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
def chk(r, what):
    if r != 0:
        e = ctypes.get_errno()
        sys.exit(f"{what}: {os.strerror(e)}")
fds = {}
proc = os.open(f"/proc/{os.getpid()}", os.O_RDONLY | os.O_DIRECTORY)  # still there in a chroot
for op, *a in json.loads(sys.argv[1]):
    b = [bytes.fromhex(a[0])] if a else []
    if op == "chdir":
        os.chdir(b[0])
    elif op == "dirfd":
        fds[a[1]] = os.open(b[0], os.O_RDONLY | os.O_DIRECTORY)
    elif op == "create":
        os.close(os.open(b[0], os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600,
                         dir_fd=fds.get(a[1]) if len(a) > 1 else None))
    elif op == "creates":  # a[1] files named <prefix>0.. in one directory
        for i in range(int(a[1])):
            os.close(os.open(b[0] + str(i).encode(), os.O_CREAT | os.O_EXCL | os.O_WRONLY,
                             0o600))
    elif op == "mkdir":
        os.mkdir(b[0], 0o700, dir_fd=fds.get(a[1]) if len(a) > 1 else None)
    elif op == "mknod":
        os.mkfifo(b[0], 0o600, dir_fd=fds.get(a[1]) if len(a) > 1 else None)
    elif op == "unshare_mount":
        chk(libc.unshare(0x00020000), "unshare")  # CLONE_NEWNS
        # MS_REC | MS_PRIVATE on /: nothing mounted here reaches the parent namespace
        chk(libc.mount(None, b"/", None, 0x4000 | 0x40000, None), "make-rprivate")
    elif op == "tmpfs":
        chk(libc.mount(b"ap-test", b[0], b"tmpfs", 0, b"size=1m"), "mount tmpfs")
    elif op == "chroot":
        os.chroot(b[0])
        os.chdir("/")
    elif op == "pin":  # one CPU from here on: the tracepoints' path cache is per CPU
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    elif op == "rename":
        os.rename(b[0], bytes.fromhex(a[1]))
    elif op == "move_mount":
        chk(libc.mount(b[0], bytes.fromhex(a[1]), None, 0x2000, None), "mount --move")
print(json.dumps({"pid": os.getpid(), "mnt_ns": os.stat("ns/mnt", dir_fd=proc).st_ino}))
"""


def hx(p: Path | str | bytes) -> str:
    return os.fsencode(p).hex()


class Capture:
    """A running pipeline (tracepoint fallback, jsonl sink) and the events of one creator.
    Under a chroot (CI's fresh root) every path the kernel resolves starts with the
    chroot's location: Capture learns it from one file of its own and takes it off each
    whole path, so that the tests compare the paths as this process sees them."""

    def __init__(self, out: Path, pl: Any) -> None:
        self.out, self.pl = out, pl
        self.prefix = b""

    def learn_prefix(self, probe: Path) -> None:
        _, (e,) = self.run([["create", hx(probe)]], 1)
        got, want = exact_path(e), bytes(probe)
        assert got.endswith(want) and not e["path_truncated"], (got, want)
        self.prefix = got[:-len(want)]
        assert self.prefix == b"" or self.prefix.startswith(b"/"), self.prefix

    def _inside(self, e: dict[str, Any]) -> dict[str, Any]:
        got = exact_path(e)
        # a flagged path cut at the front is a suffix: it does not start with the prefix
        if not self.prefix or not got.startswith(self.prefix + b"/"):
            return e
        inner = got[len(self.prefix):]
        e = dict(e, path=inner.decode("utf-8", "replace"))
        if "path_b64" in e:
            e["path_b64"] = base64.b64encode(inner).decode()
        return e

    def run(self, ops: list[list[Any]], expect: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        res = subprocess.run([sys.executable, "-c", CREATOR, json.dumps(ops)],
                             capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, res.stderr
        info = json.loads(res.stdout)

        def mine() -> list[dict[str, Any]]:
            if not self.out.exists():
                return []
            return [e for e in read_jsonl(self.out) if e["pid"] == info["pid"]]

        wait_for(lambda: len(mine()) >= expect, 10, f"{expect} events of {ops}")
        events = [self._inside(e) for e in mine()]
        assert len(events) == expect, events
        return info, events


@pytest.fixture
def capture(tmp_path: Path, pin_root: Path, pipeline_proc: StartPipeline) -> Iterator[Capture]:
    out = tmp_path / "ev.jsonl"
    pl = pipeline_proc("--sink", "jsonl", "--output", str(out), "--trigger", "tracepoint",
                       "--pin-dir", str(pin_root))
    cap = Capture(out, pl)
    if CHROOTED:
        cap.learn_prefix(Path(os.path.realpath(tmp_path)) / "where-the-chroot-is")
    yield cap
    assert pl.stop() == 0


@pytest.fixture
def work(tmp_path: Path) -> Path:
    w = tmp_path / "w"
    w.mkdir()
    return Path(os.path.realpath(w))


def own_mnt_ns() -> int:
    return os.stat("/proc/self/ns/mnt").st_ino


def exact_path(ev: dict[str, Any]) -> bytes:
    """The path's exact bytes, the README's way."""
    if "path_b64" in ev:
        return base64.b64decode(ev["path_b64"], validate=True)
    return str(ev["path"]).encode("utf-8")


def test_relative_after_chdir(capture: Capture, work: Path) -> None:
    (work / "sub").mkdir()
    _, evs = capture.run([["chdir", hx(work / "sub")], ["create", hx("rel-file")],
                          ["mkdir", hx("rel-dir")], ["mknod", hx("rel-fifo")]], 3)
    got = {e["name"]: (e["syscall"], e["path"], e["path_truncated"], e["mnt_ns"]) for e in evs}
    ns = own_mnt_ns()
    assert got == {
        "rel-file": ("openat", str(work / "sub" / "rel-file"), False, ns),
        "rel-dir": ("mkdir", str(work / "sub" / "rel-dir"), False, ns),
        "rel-fifo": ("mknodat", str(work / "sub" / "rel-fifo"), False, ns),
    }


def test_relative_to_a_directory_descriptor(capture: Capture, work: Path) -> None:
    d = work / "by-fd"
    d.mkdir()
    # the working directory is elsewhere: only the descriptor can give the path
    _, evs = capture.run([["chdir", hx("/")], ["dirfd", hx(d), "d"],
                          ["create", hx("f-at"), "d"], ["mkdir", hx("d-at"), "d"],
                          ["mknod", hx("p-at"), "d"]], 3)
    got = {e["name"]: (e["syscall"], e["path"]) for e in evs}
    assert got == {"f-at": ("openat", str(d / "f-at")), "d-at": ("mkdirat", str(d / "d-at")),
                   "p-at": ("mknodat", str(d / "p-at"))}


def test_dot_dot_components(capture: Capture, work: Path) -> None:
    """An open's path comes from the new file's dentry: no `..`. mkdir and mknod have no
    file to look at: the directory is resolved and the argument follows as given."""
    (work / "a").mkdir()
    _, evs = capture.run([["chdir", hx(work / "a")], ["create", hx("../f-up")],
                          ["create", hx("./../a/./f-dots")], ["mkdir", hx("../d-up")],
                          ["dirfd", hx(work / "a"), "a"], ["mkdir", hx("../../w/d-up2"), "a"]],
                         4)
    got = {e["name"]: e["path"] for e in evs}
    assert got == {
        "../f-up": str(work / "f-up"),
        "./../a/./f-dots": str(work / "a" / "f-dots"),
        "../d-up": f"{work}/a/../d-up",
        "../../w/d-up2": f"{work}/a/../../w/d-up2",
    }
    # each path names the file that was created
    for p in got.values():
        assert os.path.lexists(p), p


def test_absolute_argument(capture: Capture, work: Path) -> None:
    _, evs = capture.run([["chdir", hx("/")], ["create", hx(work / "f-abs")],
                          ["mkdir", hx(work / "d-abs")]], 2)
    assert sorted((e["name"], e["path"]) for e in evs) == [
        (str(work / "d-abs"), str(work / "d-abs")), (str(work / "f-abs"), str(work / "f-abs"))]


@pytest.fixture
def bind_mount(work: Path) -> Iterator[tuple[Path, Path]]:
    src, dst = work / "bind-src", work / "bind-dst"
    src.mkdir()
    dst.mkdir()
    subprocess.run(["mount", "--bind", str(src), str(dst)], check=True)
    try:
        yield src, dst
    finally:
        subprocess.run(["umount", str(dst)], check=True)


def test_bind_mount(capture: Capture, bind_mount: tuple[Path, Path]) -> None:
    """A file created through the bind mount shows the path it was created through; the
    same directory reached through its own path shows that one."""
    src, dst = bind_mount
    _, evs = capture.run([["create", hx(dst / "via-bind")], ["create", hx(src / "via-src")],
                          ["chdir", hx(dst)], ["mkdir", hx("d-via-bind")]], 3)
    got = {e["name"]: e["path"] for e in evs}
    assert got == {str(dst / "via-bind"): str(dst / "via-bind"),
                   str(src / "via-src"): str(src / "via-src"),
                   "d-via-bind": str(dst / "d-via-bind")}
    assert (src / "via-bind").exists() and (src / "d-via-bind").is_dir()


@NEEDS_ROOT_MOUNT
def test_mount_namespace_with_a_private_tmpfs(capture: Capture, work: Path) -> None:
    """In a new mount namespace, with a tmpfs mounted there only: the path is the one from
    that namespace's root, and mnt_ns names that namespace, not the initial one. A file on a
    file system both namespaces see has the same path in both."""
    m = work / "private-mnt"
    m.mkdir()
    info, evs = capture.run([["unshare_mount"], ["tmpfs", hx(m)],
                             ["create", hx(m / "in-private-tmpfs")],
                             ["mkdir", hx(m / "dir-in-private-tmpfs")],
                             ["create", hx(work / "shared-from-ns")]], 3)
    assert info["mnt_ns"] != own_mnt_ns()
    got = {e["name"]: (e["path"], e["mnt_ns"], e["path_truncated"]) for e in evs}
    assert got == {
        str(m / "in-private-tmpfs"): (str(m / "in-private-tmpfs"), info["mnt_ns"], False),
        str(m / "dir-in-private-tmpfs"): (str(m / "dir-in-private-tmpfs"), info["mnt_ns"],
                                          False),
        str(work / "shared-from-ns"): (str(work / "shared-from-ns"), info["mnt_ns"], False),
    }
    # the tmpfs was the namespace's alone: from here, the path leads nowhere
    assert not (m / "in-private-tmpfs").exists()
    assert (work / "shared-from-ns").exists()


def test_chroot(capture: Capture, work: Path) -> None:
    """Inside a chroot, the path is the one from the mount namespace's root, not the
    chroot's: the chroot's directory comes first."""
    jail = work / "jail"
    (jail / "sub").mkdir(parents=True)
    info, evs = capture.run([["chroot", hx(jail)], ["create", hx("/sub/f-abs")],
                             ["chdir", hx("/sub")], ["mkdir", hx("d-rel")],
                             ["mkdir", hx("/d-abs")]], 3)
    got = {e["name"]: (e["path"], e["mnt_ns"]) for e in evs}
    ns = own_mnt_ns()
    assert info["mnt_ns"] == ns  # a chroot is not a namespace of its own
    assert got == {"/sub/f-abs": (str(jail / "sub" / "f-abs"), ns),
                   "d-rel": (str(jail / "sub" / "d-rel"), ns),
                   "/d-abs": (str(jail / "d-abs"), ns)}


@pytest.fixture
def tmpfs(work: Path) -> Iterator[Path]:
    """A tmpfs of the test's own: paths below it do not depend on where pytest's tmp is."""
    t = work / "t"
    t.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "ap-test", str(t)], check=True)
    try:
        yield t
    finally:
        subprocess.run(["umount", str(t)], check=True)


def suffix_that_fits(path: bytes, cap: int) -> bytes:
    """The components nearest the file, as many as fit in cap bytes, each with its '/'."""
    parts = path.split(b"/")[1:]
    out = b""
    for p in reversed(parts):
        if len(out) + len(p) + 1 > cap:
            break
        out = b"/" + p + out
    return out


def test_every_name_length_through_three_words(capture: Capture, work: Path) -> None:
    """Components of every length from 1 to 24 bytes, each a different letter: each lands
    whole, in its place, with nothing of its neighbours over it, whatever its length's
    remainder in words."""
    deep = work.joinpath(*[chr(ord("a") + n - 1) * n for n in range(1, 25)])
    deep.mkdir(parents=True)
    # relative arguments: an absolute one this long would be cut to the name field
    _, evs = capture.run([["chdir", hx(deep)], ["create", hx("f")], ["mkdir", hx("g" * 9)]],
                         2)
    assert sorted((e["name"], e["path"], e["path_truncated"]) for e in evs) == [
        ("f", str(deep / "f"), False), ("ggggggggg", str(deep / "ggggggggg"), False)]


def test_path_longer_than_the_field(capture: Capture, tmpfs: Path) -> None:
    """A path of more than PATH_CAP bytes: flagged, and what is shown is a true suffix of
    the path, starting at a component: the longest that fits."""
    deep = tmpfs.joinpath(*[f"{i:02d}" + "x" * 38 for i in range(16)])  # 16 x 41 bytes
    deep.mkdir(parents=True)
    _, evs = capture.run([["dirfd", hx(deep), "d"], ["create", hx("leaf-file"), "d"],
                          ["mkdir", hx("leaf-dir"), "d"]], 2)
    for e in evs:
        full = bytes(deep / e["name"])
        assert len(full) > PATH_CAP
        shown = exact_path(e)
        assert e["path_truncated"] is True
        assert shown == suffix_that_fits(full, PATH_CAP), (shown, full)
        assert full.endswith(shown) and shown.startswith(b"/")
        assert PATH_CAP - 41 < len(shown) <= PATH_CAP


def mount_crossings(path: Path) -> int:
    """The mount crossings of the walk from path up to the top of the mount tree, from
    /proc/self/mountinfo: one per mount on the way whose parent is another mount. The
    parent of "/" may be a mount this namespace does not list (the initial rootfs, when
    "/" was mounted over it): that is a crossing too, and the top."""
    mounts: dict[str, tuple[int, int]] = {}  # mount point -> (id, parent id), last wins
    ids: set[int] = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mid, parent, _, _, point = line.split()[:5]
            mounts[point] = (int(mid), int(parent))
            ids.add(int(mid))
    by_id = {mid: (parent, point) for point, (mid, parent) in mounts.items()}
    here = next(str(p) for p in [path, *path.parents] if str(p) in mounts)
    mid, n = mounts[here][0], 0
    while True:
        parent, _ = by_id[mid]
        if parent == mid:
            return n
        n += 1
        if parent not in by_id:
            return n
        mid = parent


@NEEDS_WHOLE_TREE
def test_path_deeper_than_the_walk(capture: Capture, tmpfs: Path) -> None:
    """More components than the walk takes steps: flagged, and the shown part is the last
    PATH_DEPTH components (all inside the test's tmpfs, so no mount is crossed first)."""
    deep = tmpfs.joinpath(*["a"] * (PATH_DEPTH + 5))
    deep.mkdir(parents=True)
    _, evs = capture.run([["dirfd", hx(deep), "d"], ["create", hx("f"), "d"]], 1)
    (e,) = evs
    assert e["path_truncated"] is True
    assert e["path"] == "/a" * (PATH_DEPTH - 1) + "/f"
    # a path of exactly PATH_DEPTH steps (components and mount crossings) is whole
    outer = tmpfs.parts[1:]
    crossings = mount_crossings(tmpfs)
    k = PATH_DEPTH - crossings - len(outer) - 1
    assert k > 0
    ok = tmpfs.joinpath(*["b"] * k)
    ok.mkdir(parents=True)
    _, evs = capture.run([["create", hx(ok / "g")]], 1)
    assert (evs[0]["path"], evs[0]["path_truncated"]) == (str(ok / "g"), False)
    # one step more: the outermost step is the one left out. Where "/" is mounted over
    # another mount (as here), that is the crossing above "/", which adds no bytes: the
    # shown path is whole yet flagged, since the walk cannot know nothing is above it.
    # Otherwise it is the first component.
    (ok / "b").mkdir()
    _, evs = capture.run([["create", hx(ok / "b" / "h")]], 1)
    assert evs[0]["path_truncated"] is True
    full = str(ok / "b" / "h")
    assert evs[0]["path"] == (full if mount_crossings(Path("/")) else full[len(outer[0]) + 1:])


def test_mkdir_argument_longer_than_the_name_field(capture: Capture, work: Path) -> None:
    """mkdir's path ends in its argument: one cut to its first 255 bytes (`truncated`)
    leaves the path unknown past them, so it is flagged too."""
    parent = work.joinpath(*["p" * 50] * 5)  # 5 x 51 bytes of argument, then the new name
    parent.mkdir(parents=True)
    arg = "/".join(["p" * 50] * 5) + "/" + "n" * 40
    _, evs = capture.run([["chdir", hx(work)], ["mkdir", hx(arg)], ["create", hx(arg + "/f")]],
                         2)
    (d,) = [e for e in evs if e["syscall"] == "mkdir"]
    (f,) = [e for e in evs if e["syscall"] == "openat"]
    assert (d["syscall"], d["truncated"], d["path_truncated"]) == ("mkdir", True, True)
    assert d["path"] == f"{work}/{arg[:255]}"
    # an open is resolved from its file: whole, though its argument was cut
    assert (f["truncated"], f["path_truncated"], f["path"]) == (True, False, f"{work}/{arg}/f")


def test_names_that_are_not_utf8(capture: Capture, work: Path) -> None:
    bad_dir = b"dir-\xff\xfe"
    d = os.path.join(os.fsencode(work), bad_dir)
    os.mkdir(d)
    names = [b"f-\x80", b"ok-\xc3\xa9", b"ctl-\x01\n\x1f", b"\xed\xa0\x80"]
    ops: list[list[Any]] = [["chdir", d.hex()]]
    ops += [["create", n.hex()] for n in names]
    _, evs = capture.run(ops, len(names))
    for e, n in zip(evs, names, strict=True):
        assert exact_path(e) == d + b"/" + n
        # the directory is never valid UTF-8, so the base64 copy is always there
        assert "path_b64" in e
        assert e["path"] == (d + b"/" + n).decode("utf-8", "replace")


# ---- the path cache (bpf/path.bpf.h, struct ap_path_cache) ----
# The creator pins itself to one CPU first, so that each creation after the first in a
# directory finds that directory's path in the CPU's cache; each test then changes what
# the cached path depends on, and the next creation must show the path as it is now.


def test_cache_many_creations_in_one_directory(capture: Capture, work: Path) -> None:
    d = work / "many"
    d.mkdir()
    _, evs = capture.run([["pin"], ["creates", hx(d / "f"), 300]], 300)
    assert sorted((e["path"], e["path_truncated"]) for e in evs) == sorted(
        (str(d / f"f{i}"), False) for i in range(300))


def test_cache_after_an_ancestor_is_renamed(capture: Capture, work: Path) -> None:
    """The directory is the same object throughout; a directory above it is renamed
    twice, between creations that would otherwise find its old path cached."""
    (work / "a" / "b").mkdir(parents=True)
    a, c, e = work / "a", work / "c", work / "e"
    _, evs = capture.run([["pin"], ["create", hx(a / "b" / "f1")], ["rename", hx(a), hx(c)],
                          ["create", hx(c / "b" / "f2")], ["chdir", hx(c / "b")],
                          ["mkdir", hx("m1")], ["rename", hx(c), hx(e)], ["mkdir", hx("m2")],
                          ["create", hx("f3")]], 5)
    got = {ev["name"]: ev["path"] for ev in evs}
    assert got == {str(a / "b" / "f1"): str(a / "b" / "f1"),
                   str(c / "b" / "f2"): str(c / "b" / "f2"),
                   "m1": str(c / "b" / "m1"), "m2": str(e / "b" / "m2"),
                   "f3": str(e / "b" / "f3")}


def test_cache_after_its_own_directory_is_renamed(capture: Capture, work: Path) -> None:
    """Creations through a descriptor of a directory that is renamed, and renamed back,
    meanwhile: every kind of call, each with the name the directory has at the time."""
    x, y = work / "x", work / "y"
    x.mkdir()
    _, evs = capture.run([["pin"], ["dirfd", hx(x), "d"], ["create", hx("q1"), "d"],
                          ["mkdir", hx("d1"), "d"], ["rename", hx(x), hx(y)],
                          ["create", hx("q2"), "d"], ["mkdir", hx("d2"), "d"],
                          ["mknod", hx("p2"), "d"], ["rename", hx(y), hx(x)],
                          ["create", hx("q3"), "d"]], 6)
    got = {ev["name"]: ev["path"] for ev in evs}
    assert got == {"q1": str(x / "q1"), "d1": str(x / "d1"), "q2": str(y / "q2"),
                   "d2": str(y / "d2"), "p2": str(y / "p2"), "q3": str(x / "q3")}


@pytest.fixture
def private_tmpfs(work: Path) -> Iterator[Path]:
    """A tmpfs whose mounts do not propagate: a mount below it can be moved."""
    t = work / "pt"
    t.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "ap-test", str(t)], check=True)
    subprocess.run(["mount", "--make-private", str(t)], check=True)
    try:
        yield t
    finally:
        subprocess.run(["umount", "-R", str(t)], check=True)


def test_cache_after_a_mount_is_moved(capture: Capture, private_tmpfs: Path) -> None:
    """The working directory's mount is moved elsewhere between two creations in it: the
    directory and its mount are the same objects, the mount's place is not."""
    m1, m2 = private_tmpfs / "m1", private_tmpfs / "m2"
    m1.mkdir()
    m2.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "ap-moved", str(m1)], check=True)
    (m1 / "sub").mkdir()
    _, evs = capture.run([["pin"], ["chdir", hx(m1 / "sub")], ["create", hx("f1")],
                          ["move_mount", hx(m1), hx(m2)], ["create", hx("f2")],
                          ["mkdir", hx("g2")]], 3)
    got = {ev["name"]: ev["path"] for ev in evs}
    assert got == {"f1": str(m1 / "sub" / "f1"), "f2": str(m2 / "sub" / "f2"),
                   "g2": str(m2 / "sub" / "g2")}
    assert (m2 / "sub" / "f2").exists()
