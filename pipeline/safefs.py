"""Open, rename and remove files as root in directories other users may reach, without
being redirected.

The pipeline runs as root and writes where its configuration says. Anything another user
can put in the way (a symbolic link at the file's name, a file of theirs created there in
advance, a directory on the path they can change) must not make it write to, chmod, rename
or remove anything but its own files. The rules:

- The directory is opened once, by walking its path from "/" one component at a time with
  O_NOFOLLOW. Each directory walked through must be *safe*: owned by root or the running
  user, and not writable by group or others unless sticky (in a sticky directory others
  cannot rename or remove entries they do not own). A symbolic link on the way is followed
  only if root or the running user owns it. Whatever that walk reached, every later open,
  rename and removal is relative to its descriptor (openat, renameat, unlinkat), so a
  directory on the path swapped for a link later changes nothing.
- A directory that is not safe is refused, unless the caller allows shared directories:
  then the walk goes on, and the file checks below still keep the sink to its own file.
- The file is opened with O_NOFOLLOW, and the checks are made on the open descriptor
  (fstat), so what is checked is what is written: a regular file the running user owns
  with a single link (a hard link could give it a second name elsewhere, e.g. a system
  file). Only then is its mode set (fchmod).
- A name is renamed or removed only if it holds a regular file the running user owns.

Errors: `Refused` for something found in the way (str: one line, what it is and what to do,
without the caller's path, so callers can prefix theirs), its subclass `SharedDir` for a
directory others can change (the caller adds how to accept one); OSError for the system
saying no (ENOENT, EACCES, EROFS).
"""

from __future__ import annotations

import errno
import os
import stat

_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO swapped in between the check and the open fails at once instead of
# blocking until a reader comes; O_NOCTTY: a terminal can never become ours.
_FILE_FLAGS = (os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
               | os.O_NOCTTY | os.O_CLOEXEC)
_MAX_LINKS = 40  # the kernel's own limit on links followed in one lookup


class Refused(Exception):
    """Something is in the way that the pipeline must not write to or through."""


class SharedDir(Refused):
    """A directory on the way can be changed by another user (accepted with allow_shared)."""


def owner_name(uid: int) -> str:
    return "root" if uid == 0 else f"uid {uid}"


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"),
             (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    for test, name in kinds:
        if test(mode):
            return name
    return "not a regular file"


def dir_problem(st: os.stat_result) -> str | None:
    """Why another user could change what a directory holds, or None if nobody but root or
    the running user can."""
    me = os.geteuid()
    if st.st_uid not in (0, me):
        return f"is owned by {owner_name(st.st_uid)}, who can change what it holds"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
        return (f"is writable by other users (mode {stat.S_IMODE(st.st_mode):04o}, "
                "not sticky), who can replace what it holds")
    return None


def open_dir(path: str, allow_shared: bool = False) -> int:
    """An O_PATH descriptor of directory `path`, reached without following a link another
    user could have planted. Raises Refused naming the first unsafe directory on the way
    (unless `allow_shared`), OSError if the path does not lead to a directory."""
    start = path if path.startswith("/") else os.path.join(os.getcwd(), path)
    todo = [c for c in reversed(start.split("/")) if c not in ("", ".")]
    shown = "/"
    fd = os.open("/", _DIR_FLAGS)
    try:
        _check_walked(fd, shown, allow_shared)
        links = 0
        while todo:
            name = todo.pop()
            try:
                nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                if e.errno not in (errno.ENOTDIR, errno.ELOOP):
                    raise
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISLNK(st.st_mode):
                    raise
                here = os.path.join(shown, name)
                if st.st_uid not in (0, os.geteuid()) and not allow_shared:
                    raise SharedDir(f"{here} is a symbolic link owned by "
                                    f"{owner_name(st.st_uid)}, who can change where it "
                                    "leads") from None
                links += 1
                if links > _MAX_LINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path) from None
                target = os.readlink(name, dir_fd=fd)
                todo.extend(c for c in reversed(target.split("/")) if c not in ("", "."))
                if target.startswith("/"):
                    os.close(fd)
                    fd = -1
                    fd = os.open("/", _DIR_FLAGS)
                    shown = "/"
                continue
            os.close(fd)
            fd = nfd
            shown = os.path.normpath(os.path.join(shown, name))
            _check_walked(fd, shown, allow_shared)
        return fd
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise


def _check_walked(fd: int, shown: str, allow_shared: bool) -> None:
    if allow_shared:
        return
    problem = dir_problem(os.fstat(fd))
    if problem is not None:
        raise SharedDir(f"directory {shown} {problem}")


def check_dir(dfd: int, shown: str, allow_shared: bool = False) -> None:
    """Refuse a directory opened earlier that has since become writable by others."""
    _check_walked(dfd, shown, allow_shared)


_LINK = "it is a symbolic link, which is never followed; remove it or give the real file's path"


def _file_problem(st: os.stat_result) -> str | None:
    if stat.S_ISLNK(st.st_mode):
        return _LINK
    if stat.S_ISDIR(st.st_mode):
        return "it is a directory; output must name a file"
    if not stat.S_ISREG(st.st_mode):
        return (f"it is {_kind(st.st_mode)}, not a regular file; use the stdout sink for "
                "pipes and devices")
    me = os.geteuid()
    if st.st_uid != me:
        return (f"it is owned by {owner_name(st.st_uid)}, not {owner_name(me)}, who could "
                "read every event; remove it or choose another path")
    if st.st_nlink != 1:
        return (f"it has {st.st_nlink} hard links, so it is also some other file; remove it "
                "or choose another path")
    return None


def open_append(dfd: int, name: str, mode: int) -> tuple[int, os.stat_result]:
    """Open `name` in directory `dfd` for appending, creating it with `mode` if missing; the
    file must be a regular file the running user owns, with one link. Its permission bits
    are then set to `mode`. Returns the descriptor and its fstat."""
    try:
        pre = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        pass
    else:
        # Checked before opening too, so that nothing of another user's, nor a device whose
        # open has effects, is even opened; the checks on the descriptor below decide.
        problem = _file_problem(pre)
        if problem is not None:
            raise Refused(problem)
    try:
        fd = os.open(name, _FILE_FLAGS, mode, dir_fd=dfd)
    except OSError as e:
        if e.errno == errno.ELOOP:  # a link planted between the check and the open
            raise Refused(_LINK) from None
        raise
    try:
        st = os.fstat(fd)
        problem = _file_problem(st)
        if problem is not None:
            raise Refused(problem)
        # The create mode is filtered by the umask and ignored for an existing file.
        if stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)
            st = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def own_entry(dfd: int, name: str) -> bool:
    """True if `name` holds a regular file the running user owns, False if nothing is there;
    Refused if something else is (rotation must neither move nor replace it)."""
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode):
        raise Refused(f"{name} is {_kind(st.st_mode)}, not a file the sink wrote; "
                      "remove it")
    if st.st_uid != os.geteuid():
        raise Refused(f"{name} is owned by {owner_name(st.st_uid)}, not a file the sink "
                      "wrote; remove it")
    return True


def rename_own(dfd: int, src: str, dst: str) -> None:
    """Rename within directory `dfd`; a rename never follows a link at either name."""
    os.rename(src, dst, src_dir_fd=dfd, dst_dir_fd=dfd)


def unlink_own(dfd: int, name: str) -> None:
    """Remove `name` from `dfd` if it is the running user's regular file (nothing if absent)."""
    if own_entry(dfd, name):
        os.unlink(name, dir_fd=dfd)
