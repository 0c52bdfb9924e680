"""Sets up the test VMs: Debian's own kernels booted under QEMU (software emulation) with
this machine's root filesystem shared read-only (tests/helpers/vm.py, tests/test_vm_kernels.py).

    sudo python3 scripts/setup-vm.py        (make vm; standard library only)

- Installs the Debian packages that are missing: qemu-system-x86 (bookworm's ships
  virtiofsd as /usr/lib/qemu/virtiofsd; the `virtiofsd` package is installed only where
  QEMU has none), busybox-static and gpgv.
- Fetches one Debian 13 cloud kernel package of each series in SERIES into build/vm/ and
  checks it against the SHA-256 pinned here. If Debian has removed the pinned build, the
  newest package of the same series is taken instead, found through the suites'
  InRelease files (signature checked by gpgv with Debian's archive keyring, expiry and
  codename checked), their Packages index (checked against InRelease's SHA-256) and the
  index's SHA-256 of the package.
- Extracts the kernel image and, if the kernel has virtio-pci, FUSE or virtiofs as modules
  rather than built in, those modules and what they depend on; builds an initramfs (cpio
  newc, gzip) of busybox, tests/vm/init and the modules.
- Writes build/vm/kernels.json: for each series either what to boot, or why it cannot be
  (the tests for it then skip with that reason).

build/vm is refused if it is a symbolic link, not a directory, not root's, or writable by
others, as is any directory on the way that another user could change
(pipeline/safefs.py). A second run with everything in place downloads nothing.
Exit status: 0 (also when a kernel is unavailable: kernels.json says why), 2 when not
root, a package cannot be installed or build/vm is refused.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import email.utils
import functools
import gzip
import hashlib
import json
import lzma
import os
import re
import stat
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import newc  # noqa: E402  (scripts/newc.py, beside this script)

from pipeline import safefs  # noqa: E402  (the checkout is not always on the path)

DEBIAN = "http://deb.debian.org/debian"
SECURITY = "http://deb.debian.org/debian-security"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
BUSYBOX = Path("/bin/busybox")
INIT = ROOT / "tests" / "vm" / "init"
VIRTIOFSD = (Path("/usr/libexec/virtiofsd"), Path("/usr/lib/qemu/virtiofsd"))
PACKAGES = ("qemu-system-x86", "busybox-static", "gpgv")
TIMEOUT = 60.0  # seconds without progress on one HTTP request
CHUNK = 1 << 20


@dataclass(frozen=True)
class Series:
    """One kernel series: the build pinned today, and where to look for a newer one."""

    name: str
    package: str
    version: str
    filename: str  # in the pool, as the Packages index says
    size: int
    sha256: str
    mirrors: tuple[str, ...]  # the pinned file is looked for in each
    suites: tuple[tuple[str, str], ...]  # (mirror, suite) searched when the pin is gone
    pattern: str  # the package names of the series


SERIES = (
    # Debian 13 (trixie) main and trixie-security, Packages index of 2026-11-21/29.
    Series("6.12",
           "linux-image-6.12.117+deb13-cloud-amd64", "6.12.117-1",
           "linux-signed-amd64/linux-image-6.12.117+deb13-cloud-amd64_6.12.117-1_amd64.deb",
           34671208, "e9893e5295d0549b8852611f12a4b8b5f6cc4b8128dcc2086b9847793b904ab7",
           (f"{DEBIAN}/pool/main/l", f"{SECURITY}/pool/updates/main/l"),
           ((DEBIAN, "trixie"), (DEBIAN, "trixie-updates"), (SECURITY, "trixie-security")),
           r"linux-image-6\.12\.(\d+)\+deb13-cloud-amd64"),
    # trixie-backports, Packages index of 2026-11-28.
    Series("6.18",
           "linux-image-6.18.15+deb13-cloud-amd64", "6.18.15-1~bpo13+1",
           "linux-signed-amd64/linux-image-6.18.15+deb13-cloud-amd64_6.18.15-1~bpo13+1_amd64.deb",
           49146196, "5a507681ea8c978d02265a7fec2f02c9588fb48b54b7f71edc1059e86007f3ec",
           (f"{DEBIAN}/pool/main/l",),
           ((DEBIAN, "trixie-backports"),),
           r"linux-image-6\.18\.(\d+)\+deb13-cloud-amd64"),
)

# what the guest needs built in
NEED_BUILTIN = {
    "CONFIG_BPF_SYSCALL": "BPF",
    "CONFIG_BPF_LSM": "BPF LSM",
    "CONFIG_DEBUG_INFO_BTF": "BTF",
    "CONFIG_BLK_DEV_INITRD": "an initramfs",
    "CONFIG_RD_GZIP": "a gzip initramfs",
    "CONFIG_DEVTMPFS": "devtmpfs",
    "CONFIG_SERIAL_8250_CONSOLE": "a serial console",
}
# what it needs built in or as a module (the module's name)
NEED_MODULE = {"CONFIG_VIRTIO_PCI": "virtio_pci", "CONFIG_FUSE_FS": "fuse",
               "CONFIG_VIRTIO_FS": "virtiofs"}

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+~_-]*")


class Unavailable(Exception):
    """This kernel cannot be had; str is the reason, one line."""


class NotFound(Exception):
    """HTTP 404."""


def log(msg: str) -> None:
    print(f"setup-vm: {msg}", file=sys.stderr, flush=True)


# -- Debian packages ------------------------------------------------------------------------

def installed(pkg: str) -> bool:
    res = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg],
                         capture_output=True, text=True, check=False)
    return res.returncode == 0 and res.stdout.strip() == "install ok installed"


def apt_install(pkgs: list[str]) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log(f"installing {' '.join(pkgs)}")
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *pkgs],
                   env=env, check=True, stdout=subprocess.DEVNULL)


def ensure_packages() -> None:
    missing = [p for p in PACKAGES if not installed(p)]
    if missing:
        apt_install(missing)
    if not any(p.exists() for p in VIRTIOFSD):
        apt_install(["virtiofsd"])
    if not any(p.exists() for p in VIRTIOFSD):
        raise SystemExit("setup-vm: no virtiofsd after installing its package")


# -- build/vm, trusted ----------------------------------------------------------------------

def _dir_problem(st: os.stat_result) -> str | None:
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if st.st_uid != 0:
        return f"is owned by {safefs.owner_name(st.st_uid)}, not root"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"is writable by others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def open_subdir(parent: int, name: str, shown: str) -> int:
    """Create directory `name` in `parent` if missing and open it without following a
    link; refused unless it is root's and only root can write it."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o755, dir_fd=parent)
    problem = _dir_problem(os.stat(name, dir_fd=parent, follow_symlinks=False))
    if problem is None:
        fd = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=parent)
        problem = _dir_problem(os.fstat(fd))
        if problem is None:
            return fd
        os.close(fd)
    raise SystemExit(f"setup-vm: {shown} {problem}; refusing to use it")


class VmDir:
    """build/vm: every file is created and replaced relative to its descriptor, without
    following links; the path is handed only to programs that read or write there after the
    checks (no one but root can change it or a directory above it)."""

    def __init__(self, root: Path) -> None:
        build = root / "build"
        with contextlib.suppress(FileExistsError):
            os.mkdir(build, 0o755)
        try:
            bfd = safefs.open_dir(str(build))
        except safefs.Refused as e:
            raise SystemExit(f"setup-vm: {build}: {e}") from None
        try:
            problem = _dir_problem(os.fstat(bfd))
            if problem is not None:
                raise SystemExit(f"setup-vm: {build} {problem}; refusing to use it")
            self.fd = open_subdir(bfd, "vm", str(build / "vm"))
        finally:
            os.close(bfd)
        self.path = build / "vm"

    def sub(self, name: str) -> tuple[int, Path]:
        return open_subdir(self.fd, name, str(self.path / name)), self.path / name


def read_file(dfd: int, name: str) -> bytes | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise SystemExit(f"setup-vm: {name} is not a regular file")
        return f.read()


def sha256_of(dfd: int, name: str) -> str | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    except (FileNotFoundError, OSError):
        return None
    h = hashlib.sha256()
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class NewFile:
    """A file written under a temporary name and renamed into place when complete."""

    def __init__(self, dfd: int, name: str, mode: int = 0o644) -> None:
        self.dfd, self.name, self.tmp = dfd, name, f".{name}.{os.getpid()}.part"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp, dir_fd=dfd)
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                     | os.O_CLOEXEC, mode, dir_fd=dfd)
        os.fchmod(fd, mode)
        self.file = os.fdopen(fd, "wb")

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.rename(self.tmp, self.name, src_dir_fd=self.dfd, dst_dir_fd=self.dfd)

    def discard(self) -> None:
        self.file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp, dir_fd=self.dfd)


def write_if_changed(dfd: int, name: str, data: bytes, mode: int = 0o644) -> bool:
    if read_file(dfd, name) == data:
        return False
    out = NewFile(dfd, name, mode)
    try:
        out.file.write(data)
    except BaseException:
        out.discard()
        raise
    out.commit()
    return True


# -- the archive ----------------------------------------------------------------------------

def _open(url: str) -> Any:
    try:
        return urllib.request.urlopen(url, timeout=TIMEOUT)
    except urllib.error.HTTPError as e:
        if e.code in (404, 410):
            raise NotFound(url) from None
        raise Unavailable(f"{url}: HTTP {e.code}") from None
    except (urllib.error.URLError, OSError) as e:
        raise Unavailable(f"cannot fetch {url}: {getattr(e, 'reason', e)}") from None


def fetch(url: str, limit: int = 256 << 20) -> bytes:
    with _open(url) as resp:
        data: bytes = resp.read(limit + 1)
    if len(data) > limit:
        raise Unavailable(f"{url}: larger than {limit} bytes")
    return data


def download(url: str, dfd: int, name: str, size: int, sha256: str) -> None:
    """Fetch `url` into `name`, kept only if its size and SHA-256 are the expected ones."""
    out = NewFile(dfd, name)
    try:
        h, got = hashlib.sha256(), 0
        with _open(url) as resp:
            while chunk := resp.read(CHUNK):
                got += len(chunk)
                if got > size:
                    raise Unavailable(f"{url}: larger than the {size} bytes expected")
                h.update(chunk)
                out.file.write(chunk)
        if got != size or h.hexdigest() != sha256:
            raise Unavailable(f"{url}: {got} bytes with SHA-256 {h.hexdigest()}, expected "
                              f"{size} bytes with {sha256}")
    except BaseException:
        out.discard()
        raise
    out.commit()


def verified_release(mirror: str, suite: str) -> dict[str, tuple[str, int]]:
    """The SHA-256 and size of each index file of a suite, from its InRelease once gpgv
    has checked the signature with Debian's archive keyring; the file must name the suite
    asked for (no other suite's file replayed) and be within its Valid-Until."""
    url = f"{mirror}/dists/{suite}/InRelease"
    signed = fetch(url, 16 << 20)
    res = subprocess.run(["gpgv", "--keyring", KEYRING, "--output", "-", "-"], input=signed,
                         capture_output=True, check=False)
    if res.returncode != 0:
        last = res.stderr.decode(errors="replace").strip().splitlines()[-1:]
        raise Unavailable(f"{url}: signature not good ({' '.join(last)})")
    fields: dict[str, str] = {}
    sums: dict[str, tuple[str, int]] = {}
    section = ""
    for line in res.stdout.decode(errors="replace").splitlines():
        if line.startswith((" ", "\t")):
            parts = line.split()
            if section == "SHA256" and len(parts) == 3:
                sums[parts[2]] = (parts[0], int(parts[1]))
            continue
        key, _, value = line.partition(":")
        section = key
        fields[key] = value.strip()
    if fields.get("Codename") != suite:
        raise Unavailable(f"{url}: names codename {fields.get('Codename')!r}, not {suite}")
    if "Valid-Until" in fields:
        until = email.utils.parsedate_to_datetime(fields["Valid-Until"])
        if until < datetime.datetime.now(datetime.UTC):
            raise Unavailable(f"{url}: expired on {fields['Valid-Until']}")
    return sums


def parse_stanzas(text: str) -> Iterator[dict[str, str]]:
    stanza: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if stanza:
                yield stanza
            stanza = {}
        elif not line.startswith((" ", "\t")):
            key, _, value = line.partition(":")
            stanza[key] = value.strip()
    if stanza:
        yield stanza


def dpkg_cmp(a: str, b: str) -> int:
    def holds(op: str) -> bool:
        return subprocess.run(["dpkg", "--compare-versions", a, op, b],
                              check=False).returncode == 0
    return 0 if holds("eq") else (-1 if holds("lt") else 1)


@dataclass(frozen=True)
class Candidate:
    package: str
    version: str
    url: str
    size: int
    sha256: str
    suite: str


def newest_in_series(series: Series) -> Candidate:
    """The newest package of the series in its suites' verified indexes."""
    found: list[tuple[int, Candidate]] = []
    pattern = re.compile(series.pattern)
    for mirror, suite in series.suites:
        sums = verified_release(mirror, suite)
        index = "main/binary-amd64/Packages.xz"
        if index not in sums:
            raise Unavailable(f"{mirror}/dists/{suite}/InRelease lists no {index}")
        digest, size = sums[index]
        raw = fetch(f"{mirror}/dists/{suite}/{index}")
        if len(raw) != size or hashlib.sha256(raw).hexdigest() != digest:
            raise Unavailable(f"{mirror}/dists/{suite}/{index} does not match InRelease")
        for st in parse_stanzas(lzma.decompress(raw).decode(errors="replace")):
            m = pattern.fullmatch(st.get("Package", ""))
            if not m or not {"Version", "Filename", "Size", "SHA256"} <= st.keys():
                continue
            found.append((int(m.group(1)), Candidate(
                st["Package"], st["Version"], f"{mirror}/{st['Filename']}", int(st["Size"]),
                st["SHA256"], suite)))
    if not found:
        raise Unavailable(f"no {series.pattern} in {', '.join(s for _, s in series.suites)}")
    top = max(n for n, _ in found)
    best = [c for n, c in found if n == top]
    best.sort(key=functools.cmp_to_key(lambda a, b: dpkg_cmp(a.version, b.version)))
    return best[-1]


# -- the kernel package's contents ----------------------------------------------------------

@dataclass
class Extracted:
    release: str
    config: dict[str, str]
    modules: dict[str, bytes]  # name -> uncompressed .ko


def module_name(member: str) -> str | None:
    m = re.fullmatch(r"\./(?:usr/)?lib/modules/[^/]+/kernel/.+/([^/]+)\.ko(\.xz|\.gz|\.zst)?",
                     member)
    return m.group(1).replace("-", "_") if m else None


def uncompress(member: str, data: bytes) -> bytes:
    if member.endswith(".xz"):
        return lzma.decompress(data)
    if member.endswith(".gz"):
        return gzip.decompress(data)
    if member.endswith(".zst"):
        raise Unavailable(f"{member} is zstd-compressed, which this Python cannot undo")
    return data


def modinfo_depends(ko: bytes) -> list[str]:
    m = re.search(rb"(?:^|\x00)depends=([^\x00]*)\x00", ko)
    if not m or not m.group(1):
        return []
    return [d.decode().replace("-", "_") for d in m.group(1).split(b",") if d]


def scan_deb(deb: Path, kdir: int, want: set[str], ex: Extracted | None) -> Extracted:
    """One pass over the package's files: the kernel image (written to `kdir`), its config
    and the modules named in `want`."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    release, config = (ex.release, ex.config) if ex else ("", {})
    modules = dict(ex.modules) if ex else {}
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                if not member.isreg():
                    continue
                name = member.name
                m = re.fullmatch(r"\./boot/(vmlinuz|config)-([^/]+)", name)
                mod = module_name(name)
                if not m and mod not in want:
                    continue
                f = tar.extractfile(member)
                assert f is not None
                data = f.read()
                if m and m.group(1) == "vmlinuz":
                    release = m.group(2)
                    write_if_changed(kdir, "vmlinuz", data)
                elif m:
                    write_if_changed(kdir, "config", data)
                    for line in data.decode(errors="replace").splitlines():
                        k, eq, v = line.partition("=")
                        if eq and k.startswith("CONFIG_"):
                            config[k] = v
                elif mod is not None:
                    modules[mod] = uncompress(name, data)
    finally:
        proc.stdout.close()
        rc = proc.wait()
    if rc != 0:
        raise Unavailable(f"dpkg-deb could not read {deb.name} (exit {rc})")
    return Extracted(release, config, modules)


def extract(deb: Path, kdir: int) -> tuple[Extracted, list[str]]:
    """The kernel image, config and the modules the guest needs, in load order."""
    ex = scan_deb(deb, kdir, set(), None)
    if not ex.release or not ex.config:
        raise Unavailable(f"{deb.name} holds no boot/vmlinuz-* and boot/config-*")
    missing = [why for opt, why in NEED_BUILTIN.items() if ex.config.get(opt) != "y"]
    missing += [mod for opt, mod in NEED_MODULE.items() if ex.config.get(opt) not in ("y", "m")]
    if missing:
        raise Unavailable(f"{ex.release} lacks {', '.join(missing)}")
    roots = [mod for opt, mod in NEED_MODULE.items() if ex.config[opt] == "m"]
    want = set(roots)
    for _ in range(8):  # each pass adds the dependencies of the modules found so far
        if want <= ex.modules.keys():
            break
        ex = scan_deb(deb, kdir, want, ex)
        lost = want - ex.modules.keys()
        if lost:
            raise Unavailable(f"{deb.name} has no module {', '.join(sorted(lost))}")
        for ko in list(ex.modules.values()):
            want.update(modinfo_depends(ko))
    order: list[str] = []

    def visit(mod: str, path: tuple[str, ...]) -> None:
        if mod in order:
            return
        if mod in path:
            raise Unavailable(f"module dependency loop at {mod}")
        if mod not in ex.modules:
            raise Unavailable(f"{deb.name}: module {mod} not found")
        for dep in modinfo_depends(ex.modules[mod]):
            visit(dep, (*path, mod))
        order.append(mod)

    for mod in roots:
        visit(mod, ())
    return ex, order


# -- the initramfs --------------------------------------------------------------------------

def initramfs(order: list[str], modules: dict[str, bytes]) -> bytes:
    dirs = ["bin", "dev", "proc", "sys", "newroot", "hold", "modules", "vm"]
    entries: list[tuple[str, int, bytes, int, int]] = [
        (d, stat.S_IFDIR | 0o755, b"", 0, 0) for d in dirs]
    entries.append(("dev/console", stat.S_IFCHR | 0o600, b"", 5, 1))
    entries.append(("bin/busybox", stat.S_IFREG | 0o755, BUSYBOX.read_bytes(), 0, 0))
    entries.append(("bin/sh", stat.S_IFLNK | 0o777, b"busybox", 0, 0))
    entries.append(("init", stat.S_IFREG | 0o755, INIT.read_bytes(), 0, 0))
    for mod in order:
        entries.append((f"modules/{mod}.ko", stat.S_IFREG | 0o644, modules[mod], 0, 0))
    entries.append(("modules/order", stat.S_IFREG | 0o644,
                    "".join(f"{m}.ko\n" for m in order).encode(), 0, 0))
    return gzip.compress(newc.archive(entries), compresslevel=6, mtime=0)


# -- one kernel -----------------------------------------------------------------------------

def deb_name(url: str) -> str:
    name = url.rsplit("/", 1)[-1]
    if not SAFE_NAME.fullmatch(name) or not name.endswith(".deb"):
        raise Unavailable(f"unexpected package file name {name!r}")
    return name


def obtain(series: Series, vm: VmDir, before: dict[str, Any]) -> tuple[Candidate, str]:
    """The package to use, present in build/vm with its checked SHA-256: the pinned one, or
    (pinned build gone) the one an earlier run found, or the newest of the series now."""
    pinned = Candidate(series.package, series.version,
                       f"{series.mirrors[0]}/{series.filename}", series.size, series.sha256,
                       "")
    if sha256_of(vm.fd, deb_name(pinned.url)) == pinned.sha256:
        return pinned, "pinned"
    if before.get("source") == "fallback" and before.get("url"):
        earlier = Candidate(before["package"], before["version"], before["url"],
                            before["size"], before["sha256"], before.get("suite", ""))
        if sha256_of(vm.fd, deb_name(earlier.url)) == earlier.sha256:
            return earlier, "fallback"
    for mirror in series.mirrors:
        url = f"{mirror}/{series.filename}"
        try:
            log(f"{series.name}: fetching {url}")
            download(url, vm.fd, deb_name(url), series.size, series.sha256)
            return Candidate(series.package, series.version, url, series.size,
                             series.sha256, ""), "pinned"
        except NotFound:
            log(f"{series.name}: not at {url}")
    log(f"{series.name}: {series.package} {series.version} is gone from Debian; "
        "looking for the newest of the series")
    cand = newest_in_series(series)
    log(f"{series.name}: fetching {cand.url} ({cand.suite})")
    try:
        download(cand.url, vm.fd, deb_name(cand.url), cand.size, cand.sha256)
    except NotFound:
        raise Unavailable(f"{cand.url}: listed in {cand.suite} but not found") from None
    return cand, "fallback"


def prepare(series: Series, vm: VmDir, before: dict[str, Any]) -> dict[str, Any]:
    cand, source = obtain(series, vm, before)
    kdir, kpath = vm.sub(series.name)
    try:
        have = (before.get("available") and before.get("sha256") == cand.sha256
                and sha256_of(kdir, "vmlinuz") == before.get("vmlinuz_sha256"))
        if have and not before.get("modules"):
            release = before["release"]
            order: list[str] = []
            modules: dict[str, bytes] = {}
        else:
            log(f"{series.name}: extracting {cand.package}")
            ex, order = extract(vm.path / deb_name(cand.url), kdir)
            release, modules = ex.release, ex.modules
        changed = write_if_changed(kdir, "initrd.img", initramfs(order, modules))
        if changed:
            log(f"{series.name}: wrote {kpath / 'initrd.img'}")
        return {
            "available": True,
            "series": series.name,
            "package": cand.package,
            "version": cand.version,
            "source": source,
            "suite": cand.suite,
            "url": cand.url,
            "size": cand.size,
            "sha256": cand.sha256,
            "release": release,
            "vmlinuz": f"{series.name}/vmlinuz",
            "vmlinuz_sha256": sha256_of(kdir, "vmlinuz"),
            "initrd": f"{series.name}/initrd.img",
            "modules": order,
            "note": "" if source == "pinned" else
                    f"pinned {series.package} {series.version} is gone from Debian",
        }
    finally:
        os.close(kdir)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", metavar="SERIES",
                    help="set up only this series (6.12, 6.18); repeatable")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        log("needs root (it installs packages and builds build/vm): run with sudo")
        return 2
    try:
        ensure_packages()
    except subprocess.CalledProcessError as e:
        log(f"installing packages failed: {e}")
        return 2
    if not BUSYBOX.is_file():
        log(f"{BUSYBOX} missing although busybox-static is installed")
        return 2
    vm = VmDir(ROOT)
    raw = read_file(vm.fd, "kernels.json")
    try:
        old: dict[str, Any] = json.loads(raw)["kernels"] if raw else {}
    except (ValueError, KeyError, TypeError):
        old = {}
    kernels: dict[str, Any] = {}
    for series in SERIES:
        if args.only and series.name not in args.only:
            if series.name in old:
                kernels[series.name] = old[series.name]
            continue
        try:
            entry = prepare(series, vm, old.get(series.name) or {})
            mods = " ".join(entry["modules"]) or "none needed"
            log(f"{series.name}: {entry['package']} {entry['version']} ready "
                f"({entry['source']}; modules: {mods})")
        except Unavailable as e:
            entry = {"available": False, "series": series.name, "reason": str(e)}
            log(f"{series.name}: unavailable: {e}")
        kernels[series.name] = entry
    doc = {"written_by": "scripts/setup-vm.py", "kernels": kernels}
    write_if_changed(vm.fd, "kernels.json", (json.dumps(doc, indent=2) + "\n").encode())
    os.close(vm.fd)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
