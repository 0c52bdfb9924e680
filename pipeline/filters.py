"""The kernel-evaluated filters a run can change while it runs: path prefixes to
include and exclude, uids, cgroups (include/filter.h has the tables, bpf/filter.bpf.h
the test). This module checks the values, resolves uid names and cgroup directories,
publishes a generation into the arena, and re-reads the config file on SIGHUP."""

from __future__ import annotations

import json
import os
import posixpath
import pwd
import stat
import time
from dataclasses import dataclass, field
from typing import Any

from . import _core
from .config import Config, load_file, shown
from .errors import ConfigError
from .log import get

log = get(__name__)

KEYS = ("include_paths", "exclude_paths", "uids", "cgroups")
FLAGS = {"include_paths": "--include-path", "exclude_paths": "--exclude-path",
         "uids": "--uid", "cgroups": "--cgroup"}
# the bounds of one generation's tables (include/filter.h)
MAX_PREFIXES = _core.FILTER_MAX_PREFIXES
PREFIX_MAX = _core.FILTER_PREFIX_MAX
MAX_UIDS = _core.FILTER_MAX_UIDS
MAX_CGROUPS = _core.FILTER_MAX_CGROUPS
MAX_CGROUP_LEVEL = _core.FILTER_CGROUP_LEVELS - 1
UID_MAX = _core.FILTER_UID_EMPTY - 1  # (uid_t)-1 is no user
CGROUP2_SUPER_MAGIC = 0x63677270


def _where(key: str) -> str:
    return f"fix {FLAGS[key]} or {key} in the config file"


def check_prefixes(key: str, values: list[Any]) -> list[bytes]:
    """The prefixes as bytes, or ConfigError: absolute, normalised, not "/"."""
    if len(values) > MAX_PREFIXES:
        raise ConfigError(f"{key}: at most {MAX_PREFIXES} prefixes, not {len(values)}; "
                          f"{_where(key)}")
    out: list[bytes] = []
    for v in values:
        if not isinstance(v, str):
            raise ConfigError(f"{key}: a prefix must be a string, not {shown(v)}; {_where(key)}")
        if "\0" in v:
            raise ConfigError(f"{key}: {shown(v)} contains a NUL; {_where(key)}")
        try:
            b = v.encode()
        except UnicodeEncodeError:
            raise ConfigError(f"{key}: {shown(v)} is not valid UTF-8; {_where(key)}") from None
        if not v.startswith("/") or v == "/" or posixpath.normpath(v) != v or v.startswith("//"):
            raise ConfigError(f"{key}: {shown(v)} must be an absolute, normalised path other "
                              "than / (no trailing /, no //, . or ..); " + _where(key))
        if len(b) > PREFIX_MAX:
            raise ConfigError(f"{key}: {shown(v)} is longer than {PREFIX_MAX} bytes; "
                              f"{_where(key)}")
        if b not in out:
            out.append(b)
    return out


def check_uids(values: list[Any]) -> list[int]:
    """uids (numbers 0-4294967294, or user names looked up now), or ConfigError."""
    if len(values) > MAX_UIDS:
        raise ConfigError(f"uids: at most {MAX_UIDS}, not {len(values)}; {_where('uids')}")
    out: list[int] = []
    for v in values:
        if isinstance(v, bool):
            raise ConfigError(f"uids: {shown(v)} is not a uid; {_where('uids')}")
        if isinstance(v, str) and v.isdigit():
            v = int(v)
        if isinstance(v, int):
            if not 0 <= v <= UID_MAX:
                raise ConfigError(f"uids: {v} is out of range (0-{UID_MAX}); {_where('uids')}")
            uid = v
        elif isinstance(v, str):
            try:
                uid = pwd.getpwnam(v).pw_uid
            except (KeyError, UnicodeEncodeError, ValueError):
                raise ConfigError(f"uids: no user named {shown(v)}; {_where('uids')}") from None
        else:
            raise ConfigError(f"uids: {shown(v)} is not a uid or user name; {_where('uids')}")
        if uid not in out:
            out.append(uid)
    return out


def check_cgroup_paths(values: list[Any]) -> list[str]:
    if len(values) > MAX_CGROUPS:
        raise ConfigError(f"cgroups: at most {MAX_CGROUPS}, not {len(values)}; "
                          f"{_where('cgroups')}")
    for v in values:
        if (not isinstance(v, str) or "\0" in v or not v.startswith("/")
                or posixpath.normpath(v) != v or v.startswith("//")):
            raise ConfigError(f"cgroups: {shown(v)} must be the absolute, normalised path of a "
                              f"cgroup v2 directory; {_where('cgroups')}")
    return list(dict.fromkeys(values))


def validate(cfg: Config) -> None:
    """Shape checks that need no file system (config time)."""
    check_prefixes("include_paths", cfg.include_paths)
    check_prefixes("exclude_paths", cfg.exclude_paths)
    check_cgroup_paths(cfg.cgroups)
    for v in cfg.uids:
        if isinstance(v, int) and not isinstance(v, bool):
            check_uids([v])
        elif not isinstance(v, str):
            raise ConfigError(f"uids: {shown(v)} is not a uid or user name; {_where('uids')}")


def resolve_cgroup(path: str) -> tuple[int, int]:
    """(id, level) of a cgroup v2 directory: its inode number (the kernel's cgroup id)
    and its depth below the hierarchy's root. Opened from the cgroup2 mount one
    component at a time without following links. ConfigError when it is none."""
    from .cgroups import NoCgroup2, find_mount, open_mount

    m = find_mount()
    if m is None:
        raise ConfigError(f"cgroups: {shown(path)}: no cgroup2 file system is mounted")
    point = os.fsdecode(m.point).rstrip("/") or "/"
    rel = posixpath.relpath(path, point)
    if rel == ".." or rel.startswith("../"):
        raise ConfigError(f"cgroups: {shown(path)} is not under the cgroup2 mount {point}; "
                          f"{_where('cgroups')}")
    parts = [] if rel == "." else rel.split("/")
    base = [p for p in os.fsdecode(m.root).split("/") if p]
    level = len(base) + len(parts)
    if level > MAX_CGROUP_LEVEL:
        raise ConfigError(f"cgroups: {shown(path)} lies deeper than {MAX_CGROUP_LEVEL} levels")
    try:
        fd = open_mount(m)
    except NoCgroup2 as e:
        raise ConfigError(f"cgroups: {e}") from None
    try:
        for name in parts:
            try:
                nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                              dir_fd=fd)
            except OSError as e:
                raise ConfigError(f"cgroups: cannot open {shown(path)} without following "
                                  f"links: {e.strerror}; {_where('cgroups')}") from None
            os.close(fd)
            fd = nfd
        st = os.fstat(fd)
        if not stat.S_ISDIR(st.st_mode) or _core.fs_magic(fd) != CGROUP2_SUPER_MAGIC:
            raise ConfigError(f"cgroups: {shown(path)} is not a cgroup v2 directory")
        return st.st_ino, level
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Resolved:
    include: tuple[bytes, ...] = ()
    exclude: tuple[bytes, ...] = ()
    uids: tuple[int, ...] = ()
    cgroups: tuple[tuple[int, int], ...] = ()
    cgroup_paths: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.include or self.exclude or self.uids or self.cgroups)

    def describe(self) -> dict[str, Any]:
        return {"include_paths": [b.decode() for b in self.include],
                "exclude_paths": [b.decode() for b in self.exclude],
                "uids": list(self.uids),
                "cgroups": [{"path": p, "id": c[0]}
                            for p, c in zip(self.cgroup_paths, self.cgroups, strict=True)]}


def resolve(cfg: Config) -> Resolved:
    paths = check_cgroup_paths(cfg.cgroups)
    return Resolved(include=tuple(check_prefixes("include_paths", cfg.include_paths)),
                    exclude=tuple(check_prefixes("exclude_paths", cfg.exclude_paths)),
                    uids=tuple(check_uids(cfg.uids)),
                    cgroups=tuple(resolve_cgroup(p) for p in paths),
                    cgroup_paths=tuple(paths))


@dataclass
class Filters:
    """The run's filters: what is in force, and the SIGHUP reloads."""

    session: Any
    cfg: Config
    config_path: str | None
    fixed: dict[str, Any]  # filter keys given as flags: fixed for the run
    file_cfg: Config | None = None  # the config file as it was read at start
    current: Resolved = field(default_factory=Resolved)
    generation: int = 0
    reloads: int = 0
    reload_failures: int = 0
    published_at: list[tuple[int, int]] = field(default_factory=list)  # (generation, ns)

    def publish(self, r: Resolved) -> int:
        """Publish r as the next generation; logs the CLOCK_MONOTONIC times just before
        the tables were written and just after the generation was stored (it came into
        force between them)."""
        before = time.monotonic_ns()
        g = int(self.session.set_filters(list(r.include), list(r.exclude), list(r.uids),
                                         list(r.cgroups)))
        after = time.monotonic_ns()
        self.current, self.generation = r, g
        self.published_at.append((g, after))
        log.info("filters: generation %d in force from between monotonic %d and %d ns: %s",
                 g, before, after, json.dumps(r.describe()))
        return g

    def start(self) -> None:
        """Publish the filters the run starts with, if any (before producing)."""
        r = resolve(self.cfg)
        if not r.empty:
            self.publish(r)

    def reload(self) -> None:
        """SIGHUP: read --config again and apply its filter keys; a file that does not
        parse, or bad filter values, keep the filters in force (one warning)."""
        self.reloads += 1
        if not self.config_path:
            log.warning("SIGHUP: no --config file to read again; the filters stay as they are")
            return
        try:
            fresh = Config()
            load_file(self.config_path, fresh)
            new = Config()
            for key in KEYS:
                setattr(new, key, self.fixed.get(key, getattr(fresh, key)))
            validate(new)
            r = resolve(new)
        except ConfigError as e:
            self.reload_failures += 1
            log.warning("SIGHUP: %s; generation %d stays in force", e, self.generation)
            return
        before = self.file_cfg or Config()
        changed = [k for k in _compared_keys() if k not in KEYS
                   and getattr(fresh, k) != getattr(before, k)]
        self.file_cfg = fresh
        if changed:
            log.warning("SIGHUP: %s changed in %s: only the filters apply while running; "
                        "the rest needs a restart", ", ".join(changed), self.config_path)
        if r == self.current:
            log.info("SIGHUP: the filters are unchanged; generation %d stays in force",
                     self.generation)
            return
        self.publish(r)

    def stats(self) -> dict[str, Any]:
        gen, unjudged = self.session.filter_state()
        return {"generation": int(gen), "reloads": self.reloads,
                "reload_failures": self.reload_failures, "unjudged": int(unjudged)}


def _compared_keys() -> list[str]:
    from dataclasses import fields

    return [f.name for f in fields(Config)]
