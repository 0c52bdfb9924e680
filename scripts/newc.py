"""cpio archives in the kernel's "newc" format, for the test VMs' initramfs: the base one
scripts/setup-vm.py writes, and the small one tests/helpers/vm.py appends at each boot
(the kernel unpacks each archive of an initrd in turn, later files replacing earlier
ones). Written here rather than by the cpio tool so the same inputs give the same bytes
and a device node needs no mknod."""

from __future__ import annotations

import stat
from collections.abc import Sequence

TRAILER = "TRAILER!!!"


def archive(entries: Sequence[tuple[str, int, bytes, int, int]]) -> bytes:
    """(name, mode, data, rdev major, rdev minor) each; owned by root, mtime 0."""
    out = bytearray()
    for ino, (name, mode, data, rmaj, rmin) in enumerate([*entries, (TRAILER, 0, b"", 0, 0)],
                                                         start=1):
        trailer = name == TRAILER
        bname = name.encode() + b"\0"
        nlink = 2 if stat.S_ISDIR(mode) and not trailer else 1
        fields = (0 if trailer else ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rmaj, rmin,
                  len(bname), 0)
        out += b"070701" + "".join(f"{v:08X}" for v in fields).encode() + bname
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)
