"""Which cgroup, and which container, an event came from.

The kernel puts the task's cgroup v2 id in every record (`cgroup_id`). On cgroup v2 that id
is the inode number of the cgroup's directory in the cgroup2 file system, and ids are never
given twice (64-bit kernfs ids), so a tree walk that maps inode numbers to paths names
every cgroup that exists when it runs, and a file handle holding the id opens that
one cgroup directly. Here:

- `find_mount` finds the cgroup2 mount in /proc/self/mountinfo (at /sys/fs/cgroup on a
  unified host, /sys/fs/cgroup/unified on a hybrid one), and `open_mount` opens it without
  following any link and checks it really is cgroup2 (the file system's magic number);
- `scan` walks it relative to directory descriptors, never through a link or onto another
  mount, and returns id -> path (the path as /proc/PID/cgroup shows it);
- `container_of` recognises the container runtimes' cgroup layouts in a path;
- `Cgroups` keeps the drain's table (pipeline/_core/cgtable.h) filled: the C drain stops
  at a record whose id the table lacks, `resolve` puts that id in, then the drain goes on.
  The id is opened by its file handle and its path verified (pipeline/_core/cgfh.h): no
  walk, no wait, so a user creating cgroups nonstop costs a few system calls per new
  cgroup. An id that no longer opens belonged to a cgroup that is gone, and one whose path
  does not check out is counted: both are reported as unknown (`"cgroup": null`), never
  guessed. Only where handles are refused does it walk the whole tree instead (`scan`, at
  most one walk per `min_interval` seconds). The table is bounded (cgtable.h): an id it
  evicted is looked up again.
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
import time
from dataclasses import dataclass
from typing import Any, Self

from .log import get

log = get(__name__)

CGROUP2_SUPER_MAGIC = 0x63677270
# Bounds of one walk: deeper cgroups, and cgroups past the count, are not named (their
# events say unknown). Real trees are a few levels deep and hold hundreds to thousands.
MAX_DEPTH = 64
MAX_CGROUPS = 200_000
# The longest path the drain's table keeps (PATH_MAX less its NUL, as _core's
# CGROUP_PATH_MAX): a longer one is unknown.
PATH_MAX = 4095
# At most one walk per this many seconds: a burst of new cgroups waits for the next walk
# instead of costing one each.
MIN_INTERVAL = 0.1

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class NoCgroup2(Exception):
    """The cgroup2 mount cannot be used (str: why, one line)."""


@dataclass(frozen=True)
class Mount:
    point: bytes  # where it is mounted, as this process sees it
    root: bytes  # the cgroup at the mount's root ("/" unless a subtree is mounted)


_OCTAL = re.compile(rb"\\([0-7]{3})")


def _unescape_mountinfo(field: bytes) -> bytes:
    return _OCTAL.sub(lambda m: bytes([int(m.group(1), 8)]), field)


def parse_mountinfo(text: bytes) -> Mount | None:
    """The first cgroup2 mount in mountinfo's text, or None."""
    for line in text.splitlines():
        head, sep, tail = line.partition(b" - ")
        fields, rest = head.split(b" "), tail.split(b" ")
        if not sep or len(fields) < 5 or not rest or rest[0] != b"cgroup2":
            continue
        return Mount(point=_unescape_mountinfo(fields[4]), root=_unescape_mountinfo(fields[3]))
    return None


def find_mount() -> Mount | None:
    with open("/proc/self/mountinfo", "rb") as f:
        return parse_mountinfo(f.read())


def open_mount(m: Mount) -> int:
    """A readable descriptor of the mount's root directory, reached from "/" one component
    at a time without following any link, on a file system whose magic number is
    cgroup2's. Raises NoCgroup2."""
    from . import _core

    shown = m.point.decode(errors="replace")
    if not m.point.startswith(b"/"):
        raise NoCgroup2(f"the cgroup2 mount point {shown} is not an absolute path")
    fd = os.open(b"/", _PATH_DIR)
    try:
        for name in m.point.split(b"/"):
            if name in (b"", b"."):
                continue
            if name == b"..":
                raise NoCgroup2(f"the cgroup2 mount point {shown} has a '..' component")
            try:
                nfd = os.open(name, _PATH_DIR, dir_fd=fd)
            except OSError as e:
                raise NoCgroup2(f"cannot open the cgroup2 mount {shown} without following "
                                f"links: {e.strerror}") from None
            os.close(fd)
            fd = nfd
        rfd = os.open(".", _DIR, dir_fd=fd)
    finally:
        os.close(fd)
    magic = _core.fs_magic(rfd)
    if magic != CGROUP2_SUPER_MAGIC:
        os.close(rfd)
        raise NoCgroup2(f"{shown} is not a cgroup2 file system (magic {magic:#x})")
    return rfd


def _join(parent: bytes, name: bytes) -> bytes:
    return (parent if parent != b"/" else b"") + b"/" + name


def scan(root_fd: int, root_path: bytes = b"/") -> dict[int, bytes]:
    """id -> path of every cgroup under root_fd (root_path: the cgroup at the mount's
    root), within MAX_DEPTH and MAX_CGROUPS. Only directories are entered, each opened
    relative to its parent's descriptor with O_NOFOLLOW and checked to be on the same
    file system (a mount on a cgroup directory is not walked into). A cgroup removed
    while the walk runs is left out."""
    root_st = os.fstat(root_fd)
    found = {root_st.st_ino: root_path}

    def walk(fd: int, path: bytes, depth: int) -> None:
        try:
            with os.scandir(fd) as it:
                names = [os.fsencode(e.name) for e in it if e.is_dir(follow_symlinks=False)]
        except OSError:
            return  # removed meanwhile
        for name in names:
            if len(found) >= MAX_CGROUPS:
                return
            try:
                cfd = os.open(name, _DIR, dir_fd=fd)
            except OSError:
                continue  # removed, or replaced by something that is not a directory
            try:
                st = os.fstat(cfd)
                if st.st_dev != root_st.st_dev or not stat.S_ISDIR(st.st_mode):
                    continue
                child = _join(path, name)
                found[st.st_ino] = child
                if depth + 1 < MAX_DEPTH:
                    walk(cfd, child, depth + 1)
            finally:
                os.close(cfd)

    walk(root_fd, root_path, 0)
    return found


# ---- container runtimes' layouts ----

_HEX64 = rb"[0-9a-f]{64}"
# A component that is a container's cgroup by itself, with the runtime's name.
_SCOPES: list[tuple[re.Pattern[bytes], str]] = [
    (re.compile(rb"docker-(" + _HEX64 + rb")\.scope"), "docker"),
    (re.compile(rb"cri-containerd-(" + _HEX64 + rb")\.scope"), "containerd"),
    (re.compile(rb"crio-(" + _HEX64 + rb")\.scope"), "cri-o"),
    # systemd cgroup manager (.scope), cgroupfs manager (bare), --cgroups=split (payload)
    (re.compile(rb"libpod-(" + _HEX64 + rb")(?:\.scope)?"), "podman"),
    (re.compile(rb"libpod-payload-(" + _HEX64 + rb")"), "podman"),
]
_HEX64_ONLY = re.compile(_HEX64)
_NSPAWN_SERVICE = re.compile(rb"systemd-nspawn@(.+)\.service")
_MACHINE_SCOPE = re.compile(rb"machine-(.+)\.scope")
_SYSTEMD_ESCAPE = re.compile(rb"\\x([0-9a-f]{2})")
# systemd-machined's rule for machine names: a host name (letters, digits, '-', '.',
# '_'), at most 64 bytes
_MACHINE_NAME = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _machine_name(escaped: bytes) -> str | None:
    name = _SYSTEMD_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), escaped)
    return name.decode() if _MACHINE_NAME.fullmatch(name) else None


def _component(parts: list[bytes], i: int) -> tuple[str, str] | None:
    """The container whose cgroup is parts[i] (a path's components), if it is one."""
    c = parts[i]
    for pat, runtime in _SCOPES:
        m = pat.fullmatch(c)
        if m:
            return runtime, m.group(1).decode()
    parent = parts[i - 1] if i else b""
    if _HEX64_ONLY.fullmatch(c):
        if parent == b"docker":  # docker's cgroupfs driver: /docker/<id>
            return "docker", c.decode()
        # kubelet's cgroupfs driver: /kubepods[/<qos>]/pod<uid>/<id>, any CRI runtime
        if parent.startswith(b"pod") and any(p.startswith(b"kubepods") for p in parts[:i]):
            return "cri", c.decode()
        return None
    if parent == b"machine.slice":
        m = _NSPAWN_SERVICE.fullmatch(c)
        if m:
            # nspawn's own process sits in a child "supervisor"; the container in "payload"
            if i + 1 < len(parts) and parts[i + 1] == b"supervisor":
                return None
            name = _machine_name(m.group(1))
            return ("systemd-nspawn", name) if name else None
        m = _MACHINE_SCOPE.fullmatch(c)
        if m:
            name = _machine_name(m.group(1))
            return ("machined", name) if name else None
    return None


def container_of(path: bytes) -> tuple[str, str] | None:
    """(runtime, id) of the container a cgroup path belongs to, or None. Components are
    tried from the leaf up, so a cgroup inside a container's (systemd's own in a container,
    podman's "container" child) is the container's, and a container nested in another is
    the inner one. The runtimes' helper processes (libpod-conmon-*, crio-conmon-*, nspawn's
    supervisor) are not containers."""
    parts = [p for p in path.split(b"/") if p]
    for i in range(len(parts) - 1, -1, -1):
        hit = _component(parts, i)
        if hit:
            return hit
    return None


# ---- keeping the drain's table ----


@dataclass
class Counters:
    """What resolving has done since start (all monotonic)."""

    lookups: int = 0  # ids opened by handle (pipeline/_core/cgfh.h)
    found: int = 0  # ... whose path was verified
    gone: int = 0  # ... whose cgroup no longer exists: reported unknown
    unverified: int = 0  # ... opened but with a path that did not check out: unknown
    walks: int = 0  # full walks of the tree (only without handle lookups)


class Cgroups:
    """Fills the session's cgroup table on the drain's demand (module docstring).

    `direct`: each missed id is opened by its file handle and its path verified
    (`_core.cgroup_lookup`), one id at a time, without a walk and without waiting. Only
    when the kernel or the mount refuses handles (EPERM without CAP_DAC_READ_SEARCH,
    EOPNOTSUPP, ENOSYS) does it fall back to whole-tree walks, at most one per
    `min_interval` seconds."""

    def __init__(self, session: Any, mount: Mount | None, root_fd: int | None,
                 min_interval: float = MIN_INTERVAL) -> None:
        self.session = session
        self.mount = mount
        self.root_fd = root_fd
        self.min_interval = min_interval
        self.paths: dict[int, bytes] = {}  # the last walk's, in the fallback only
        self.last_walk = -float("inf")
        self.counters = Counters()
        self.direct = False

    @property
    def walks(self) -> int:
        return self.counters.walks

    @classmethod
    def open(cls, session: Any, direct: bool = True) -> Self:
        """Find and open the cgroup2 mount; try a handle lookup of the mount's own root,
        and walk the tree once only when that is refused (direct=False: always walk,
        the fallback's behaviour). Without a usable mount every event's cgroup is unknown
        (one warning says why)."""
        mount, fd = None, None
        try:
            mount = find_mount()
            if mount is None:
                raise NoCgroup2("no cgroup2 file system is mounted")
            fd = open_mount(mount)
        except (NoCgroup2, OSError) as e:
            log.warning("cgroup paths and containers are unknown: %s (mount cgroup2, e.g. "
                        "on /sys/fs/cgroup, to have them)", e)
            mount, fd = None, None
        self = cls(session, mount, fd)
        if fd is not None and direct:
            self.direct = self._probe(fd)
        if not self.direct:
            self.walk()
        session.cgroup_resolve(True)
        return self

    def _probe(self, fd: int) -> bool:
        from . import _core

        status, _, err = _core.cgroup_lookup(fd, os.fstat(fd).st_ino)
        if status == _core.CG_FOUND:
            return True
        log.warning("cgroups cannot be opened by id (%s): new cgroups are found by walking "
                    "the cgroup2 tree, at most one walk per %g s (run as root, with "
                    "CAP_DAC_READ_SEARCH, on Linux 5.5 or later, to look each up directly)",
                    os.strerror(err) if err else f"status {status}", self.min_interval)
        return False

    def stats(self) -> dict[str, Any]:
        """For the run's statistics: how ids were resolved, and the table's size."""
        c = self.counters
        return {"mode": "handle" if self.direct else "walk", "lookups": c.lookups,
                "found": c.found, "gone": c.gone, "unverified": c.unverified,
                "walks": c.walks, "table": self.session.cgroup_count(),
                "evicted": self.session.cgroup_evicted()}

    def close(self) -> None:
        if self.root_fd is not None:
            os.close(self.root_fd)
            self.root_fd = None

    def walk(self) -> None:
        """A new walk (the fallback): id -> path of every cgroup there now."""
        self.last_walk = time.monotonic()
        self.counters.walks += 1
        if self.root_fd is None or self.mount is None:
            return
        self.paths = scan(self.root_fd, self.mount.root)

    def _full(self, rel: bytes) -> bytes:
        assert self.mount is not None
        root = self.mount.root
        if not rel:
            return root
        return (root.rstrip(b"/") if root != b"/" else b"") + rel

    def lookup(self, cid: int) -> bytes | None:
        """The verified path of cid by its handle, or None (gone or unverified: counted)."""
        from . import _core

        assert self.root_fd is not None
        c = self.counters
        c.lookups += 1
        status, rel, err = _core.cgroup_lookup(self.root_fd, cid)
        if status == _core.CG_FOUND and rel is not None:
            c.found += 1
            return self._full(rel)
        if status == _core.CG_GONE:
            c.gone += 1
        else:
            c.unverified += 1
            log.debug("cgroup id %d opened but its path is unverified: %s", cid,
                      os.strerror(err) if err else f"status {status}")
        return None

    def _put(self, cid: int, path: bytes | None) -> None:
        if path is not None and len(path) > PATH_MAX:
            path = None
        hit = container_of(path) if path is not None else None
        runtime, container = hit if hit else (None, None)
        self.session.cgroup_set(cid, path, runtime, container)

    async def resolve(self, cid: int) -> None:
        """Put cid in the table. Direct: looked up now, never waiting. Fallback: known from
        the last walk, else after a walk that starts now or, when the last one was under
        min_interval ago, once that has passed."""
        if self.direct and self.root_fd is not None:
            self._put(cid, self.lookup(cid))
            return
        if cid not in self.paths and self.root_fd is not None:
            wait = self.last_walk + self.min_interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self.walk()
        self._put(cid, self.paths.get(cid))
