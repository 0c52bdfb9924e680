"""The pin root: a bpffs directory under which each run pins its BPF objects
in a directory named by its pid.

/sys/fs/bpf is world-writable with the sticky bit, so any user can create
the pin root, or anything inside a path given with --pin-dir, before a run
starts. Every path is therefore walked one component at a time without
following links, each directory is checked before it is used, and everything
inside the root is done relative to its descriptor. A stale run directory is
removed only when every part of it is provably what an earlier run of this
program left: a dead pid's name, a root-owned 0700 directory on the same
bpffs, holding only pinned objects under the names the C extension uses.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import stat
from collections.abc import Callable
from functools import cache

from .errors import ConfigError, KernelError

BPF_FS_MAGIC = 0xCAFE4A11
DEFAULT_ROOT = "/sys/fs/bpf/arena-pipeline"
RUN_DIR_MODE = 0o700

# What the C extension pins in a run directory: a data-structure arena (ds.c,
# the stress runner) pins "arena", one "ds_run_NAME" program per structure and
# "ds_trim" (giving free pages back to the kernel); the pipeline's session
# (session.c) pins the same, since its arena holds a data-structure space
# beside the event queue, and "burst".
SESSION_PINS = frozenset({"arena", "burst"})
DS_PINS = frozenset({"ds_trim"})

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

Log = Callable[[str], None]


@cache
def known_pin_names() -> frozenset[str]:
    from .ds import registry

    return SESSION_PINS | DS_PINS | {f"ds_run_{m.name}" for m in registry()}


@cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def fs_type(fd: int) -> int:
    """The filesystem magic of an open file (fstatfs's f_type, its first field)."""
    buf = ctypes.create_string_buffer(512)  # struct statfs is 120 bytes on 64-bit Linux
    if _libc().fstatfs(fd, buf) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


def _owner_ok(st: os.stat_result) -> bool:
    # root, or the user a CAP_BPF-only run creates its directories as
    return st.st_uid in (0, os.geteuid())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _run_pid(name: str) -> int | None:
    """The pid a run directory's name gives, or None if it is not such a name."""
    if not name.isascii() or not name.isdigit() or name != str(int(name)):
        return None
    pid = int(name)
    return pid if 0 < pid < 2**31 else None


def _bad(path: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"pin_dir {path}: {problem}; {fix}")


def _components(path: str) -> list[str]:
    fix = f"give an absolute directory on bpffs, e.g. --pin-dir {DEFAULT_ROOT}"
    if not path:
        raise ConfigError(f"pin_dir is empty; {fix}")
    if not path.startswith("/"):
        raise _bad(path, "is a relative path", fix)
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _bad(path, "has a '..' component", fix)
    if not parts:
        raise _bad(path, "is the file system's root", fix)
    return parts


def _check_ancestor(shown: str, st: os.stat_result, path: str) -> None:
    """A directory on the way to the root: nobody but root may rename or replace
    what is in it (owned by root, not writable by others unless sticky)."""
    if not stat.S_ISDIR(st.st_mode):
        raise _bad(path, f"{shown} is not a directory", "give a directory on bpffs")
    if not _owner_ok(st):
        raise _bad(path, f"{shown} is owned by uid {st.st_uid}, not root",
                   "put the pin directory under a root-owned directory such as /sys/fs/bpf")
    writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if writable and not st.st_mode & stat.S_ISVTX:
        raise _bad(path, f"{shown} is writable by others (mode {st.st_mode & 0o7777:04o})",
                   "put the pin directory under a directory only root can write, "
                   "such as /sys/fs/bpf")


def _open_parent(path: str, parts: list[str]) -> tuple[int, str]:
    """Walk to the root's parent without following links; returns an O_PATH fd."""
    fd = os.open("/", _PATH_FLAGS)
    shown = ""
    try:
        _check_ancestor("/", os.fstat(fd), path)
        for comp in parts[:-1]:
            shown = f"{shown}/{comp}"
            try:
                st = os.stat(comp, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                raise _bad(path, f"{shown} does not exist",
                           "create it or mount bpffs there (mount -t bpf bpf DIR)") from None
            if stat.S_ISLNK(st.st_mode):
                raise _bad(path, f"{shown} is a symbolic link", "give the real path")
            _check_ancestor(shown, st, path)
            nfd = os.open(comp, _PATH_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nfd
            if not os.path.samestat(os.fstat(fd), st):
                raise _bad(path, f"{shown} changed while it was checked", "run again")
        return fd, shown or "/"
    except OSError as e:
        os.close(fd)
        raise _bad(path, f"cannot walk to it: {e.strerror}", "give a directory on bpffs") from None
    except ConfigError:
        os.close(fd)
        raise


class PinRoot:
    """The validated pin root, held open; everything inside goes through self.fd."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd = fd
        self.dev = os.fstat(fd).st_dev

    @classmethod
    def open(cls, path: str, create: bool = True) -> PinRoot:
        """Validate the pin root, creating it (root-owned, 0700) when missing.

        Nothing on disk changes unless the path checks out: the parent must be
        a safe directory on bpffs before the root is made, and an existing root
        must be a real directory on bpffs, owned by root, mode 0700."""
        parts = _components(path)
        parent, parent_shown = _open_parent(path, parts)
        try:
            return cls._open_in(path, parent, parent_shown, parts[-1], create)
        except OSError as e:
            raise _bad(path, f"cannot use it: {e.strerror}",
                       f"use a directory under /sys/fs/bpf such as {DEFAULT_ROOT}") from None
        finally:
            os.close(parent)

    @classmethod
    def _open_in(cls, path: str, parent: int, parent_shown: str, name: str,
                 create: bool) -> PinRoot:
        created = False
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            if not create:
                raise _bad(path, "does not exist", "start a run first, or name another "
                           "directory with --pin-dir") from None
            if fs_type(parent) != BPF_FS_MAGIC:
                raise _bad(path, f"{parent_shown} is not on bpffs",
                           f"use a directory under /sys/fs/bpf such as {DEFAULT_ROOT}") from None
            os.mkdir(name, RUN_DIR_MODE, dir_fd=parent)
            created = True
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        fd = -1
        try:
            if stat.S_ISLNK(st.st_mode):
                raise _bad(path, "is a symbolic link", "give the real path, or remove the link")
            if not stat.S_ISDIR(st.st_mode):
                raise _bad(path, "is not a directory", f"remove it or use another path, "
                           f"such as {DEFAULT_ROOT}")
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            fst = os.fstat(fd)
            if not os.path.samestat(fst, st):
                raise _bad(path, "changed while it was checked", "run again")
            if fs_type(fd) != BPF_FS_MAGIC:
                raise _bad(path, "is not on bpffs",
                           f"use a directory under /sys/fs/bpf such as {DEFAULT_ROOT}")
            if fst.st_dev != os.fstat(parent).st_dev:
                raise _bad(path, "is a mount point, not a directory of its own",
                           f"use a directory under it, such as {path.rstrip('/')}/arena-pipeline")
            if not _owner_ok(fst):
                raise _bad(path, f"is owned by uid {fst.st_uid}, not root",
                           f"someone else made it: look inside, remove it (rm -r {path}) "
                           "and run again")
            if created:
                os.fchmod(fd, RUN_DIR_MODE)  # the umask may have taken bits off
                fst = os.fstat(fd)
            if fst.st_mode & 0o7777 != RUN_DIR_MODE:
                raise _bad(path, f"has mode {fst.st_mode & 0o7777:04o}, not 0700",
                           f"check what is in it, then chmod 0700 {path}, or use another "
                           "directory")
            return cls(path, fd)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            if created:
                with contextlib.suppress(OSError):
                    os.rmdir(name, dir_fd=parent)
            raise

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> PinRoot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- run directories ----

    def _why_not_run_dir(self, name: str, names: frozenset[str]) -> str | None:
        """None when name is a run directory of this program's shape: a
        root-owned 0700 directory on this bpffs holding only pinned objects
        with the names the C extension pins; else why not."""
        try:
            st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return "gone"
        if stat.S_ISLNK(st.st_mode):
            return "a symbolic link"
        if not stat.S_ISDIR(st.st_mode):
            return "not a directory"
        if st.st_dev != self.dev:
            return "on another file system"
        if not _owner_ok(st):
            return f"owned by uid {st.st_uid}"
        if st.st_mode & 0o7777 != RUN_DIR_MODE:
            return f"mode {st.st_mode & 0o7777:04o}"
        dfd = os.open(name, _DIR_FLAGS, dir_fd=self.fd)
        try:
            if not os.path.samestat(os.fstat(dfd), st):
                return "changed while it was checked"
            for entry in os.listdir(dfd):
                if entry not in names:
                    return f"holds {entry!r}, which this program does not pin"
                est = os.stat(entry, dir_fd=dfd, follow_symlinks=False)
                if not stat.S_ISREG(est.st_mode) or est.st_dev != self.dev:
                    # on bpffs only bpf_obj_pin makes regular files
                    return f"{entry} is not a pinned object"
                if not _owner_ok(est) or est.st_mode & 0o077:
                    return f"{entry} is owned by uid {est.st_uid}, mode {est.st_mode & 0o7777:04o}"
        finally:
            os.close(dfd)
        return None

    def _remove_run_dir(self, name: str) -> None:
        dfd = os.open(name, _DIR_FLAGS, dir_fd=self.fd)
        try:
            for entry in os.listdir(dfd):
                os.unlink(entry, dir_fd=dfd)
        finally:
            os.close(dfd)
        os.rmdir(name, dir_fd=self.fd)

    def clean_stale(self, log: Log | None = None,
                    names: frozenset[str] | None = None) -> list[int]:
        """Remove the run directories of runs that are gone; returns their pids.

        A pid counts as gone when no process has it. A dead run's pid that an
        unrelated process has taken since only delays the clean-up until that
        process ends; the directory's name is the pid alone so that other
        processes (burst, the stress workers) find a run by its pid. This
        process's own pid counts as gone: it has not made its directory yet,
        so one that exists is a dead run's whose pid it was given."""
        names = known_pin_names() if names is None else names
        removed: list[int] = []
        left: list[str] = []
        for name in sorted(os.listdir(self.fd)):
            pid = _run_pid(name)
            if pid is None:
                left.append(f"{name!r} (not a run's name)")
                continue
            if pid != os.getpid() and _pid_alive(pid):
                continue
            try:
                why = self._why_not_run_dir(name, names)
                if why is None:
                    self._remove_run_dir(name)
            except FileNotFoundError:
                why = "gone"  # another run starting at the same time took it
            except OSError as e:
                why = e.strerror or str(e)
            if why is None:
                removed.append(pid)
                if log:
                    log(f"removed stale pins of a run that is gone (pid {pid}) under "
                        f"{self.path}/{name}")
            elif why != "gone":
                left.append(f"{name} ({why})")
        if left and log:
            log(f"left alone under {self.path}, not provably a dead run's pins: "
                f"{', '.join(left)}")
        return removed

    def live_runs(self, needs: str) -> list[str]:
        """Paths of run directories whose process is alive and which pin `needs`."""
        out: list[str] = []
        for name in sorted(os.listdir(self.fd)):
            pid = _run_pid(name)
            if pid is not None and _pid_alive(pid) and self.run_pins(name, needs) is None:
                out.append(self.run_path(name))
        return out

    def run_pins(self, name: str, needs: str) -> str | None:
        """None when name is a run directory that pins `needs`; else why not."""
        try:
            why = self._why_not_run_dir(name, known_pin_names())
            if why is None:
                dfd = os.open(name, _DIR_FLAGS, dir_fd=self.fd)
                try:
                    if needs not in os.listdir(dfd):
                        why = f"pins no {needs!r}"
                finally:
                    os.close(dfd)
        except OSError as e:
            why = e.strerror or str(e)
        return why

    def run_path(self, name: str) -> str:
        return f"{self.path.rstrip('/')}/{name}"

    def make_run_dir(self) -> RunDir:
        """This run's directory, DIR/<pid>, root-owned 0700, held open."""
        name = str(os.getpid())
        try:
            os.mkdir(name, RUN_DIR_MODE, dir_fd=self.fd)
            fd = os.open(name, _DIR_FLAGS, dir_fd=self.fd)
            os.fchmod(fd, RUN_DIR_MODE)
        except OSError as e:
            raise KernelError(f"cannot create {self.path}/{name}: {e.strerror}; remove what "
                              f"is there (it is not this run's)") from None
        return RunDir(self, name, fd)


class RunDir:
    """This run's pin directory. The C extension pins through fd_path, which the
    kernel resolves to this very directory whatever happens to the path."""

    def __init__(self, root: PinRoot, name: str, fd: int) -> None:
        self.root = root
        self.name = name
        self.fd = fd
        self.path = root.run_path(name)

    @property
    def fd_path(self) -> str:
        return f"/proc/self/fd/{self.fd}"

    def remove(self) -> str | None:
        """Remove the directory and what this run pinned in it (after the C
        extension's own unpin, normally nothing); leaves anything else and
        returns why the directory stayed, or None."""
        if self.fd < 0:
            return None
        try:
            for entry in os.listdir(self.fd):
                if entry in known_pin_names():
                    st = os.stat(entry, dir_fd=self.fd, follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode):
                        os.unlink(entry, dir_fd=self.fd)
            os.rmdir(self.name, dir_fd=self.root.fd)
        except FileNotFoundError:
            pass
        except OSError as e:
            return f"cannot remove {self.path}: {e.strerror}"
        finally:
            os.close(self.fd)
            self.fd = -1
        return None


def check_run_dir(path: str, needs: str) -> str:
    """A running pipeline's directory named by hand (burst --pin-dir): its parent
    must pass as a pin root and it must be a run directory that pins `needs`."""
    parts = _components(path)
    if len(parts) < 2:
        raise _bad(path, "is not a run's directory", f"give {DEFAULT_ROOT}/<pid>")
    with PinRoot.open("/" + "/".join(parts[:-1]), create=False) as root:
        why = root.run_pins(parts[-1], needs)
        if why is not None:
            raise _bad(path, f"is not a run's pin directory ({why})",
                       f"give the directory of a running pipeline, {DEFAULT_ROOT}/<pid>")
        return root.run_path(parts[-1])
