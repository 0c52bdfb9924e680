"""The BPF objects on other kernels than this machine's: Debian's 6.12 and 6.18 cloud
kernels, booted under QEMU with this machine's root filesystem shared read-only
(tests/helpers/vm.py; `make vm` sets them up). In each, tests/vm/guest.sh loads every
program of every build/*.bpf.o alone (tests/vm/loadall.c) and the console says which the
kernel's verifier accepted and, for the others, the last lines of its log. The objects are
copied once when the tests start and handed to the guests in their initramfs, so that a
rebuild of build/ meanwhile changes nothing.

Each kernel is booted once per session; the kernels the selected tests need boot side by
side (software emulation, one host thread each), a few minutes in all. A kernel that
setup-vm.py could not fetch is skipped with its reason (build/vm/kernels.json). The raw
console of each boot is kept in build/vm/console-SERIES.log.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import vm

SERIES = ("6.12", "6.18")
LOADALL = vm.VM_DIR / "loadall"
LOADALL_SRC = vm.ROOT / "tests" / "vm" / "loadall.c"
GUEST_CMD = ["sh", "tests/vm/guest.sh", "loadall"]
BOOT_TIMEOUT = 1800.0  # the verifier under software emulation is slow

Outcome = vm.Boot | str | BaseException  # a boot, a reason to skip, or what went wrong


def _objects() -> list[Path]:
    return sorted((vm.ROOT / "build").glob("*.bpf.o"))


def _why_not() -> str | None:
    """Why no VM can be booted here, or None."""
    if os.geteuid() != 0:
        return "boots VMs with virtiofsd sharing /: needs root"
    if not (vm.VM_DIR / "kernels.json").exists():
        return "build/vm/kernels.json missing: run `make vm`"
    if shutil.which(vm.QEMU) is None or not any(p.exists() for p in vm.VIRTIOFSD):
        return "QEMU or virtiofsd missing: run `make vm`"
    if not LOADALL.exists() or LOADALL.stat().st_mtime < LOADALL_SRC.stat().st_mtime:
        return "build/vm/loadall missing or older than tests/vm/loadall.c: run `make vm`"
    if not _objects():
        return "no build/*.bpf.o: run `make bpf`"
    return None


def _wanted(session: pytest.Session) -> list[str]:
    """The kernels the selected tests of this module ask for."""
    names: set[str] = set()
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        if item.path == Path(__file__) and callspec is not None:
            names.add(callspec.params.get("series", ""))
    return [s for s in SERIES if s in names]


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The objects as they are now, copied: the guests and the host's list see the same
    ones even if build/ is rebuilt while the guests run."""
    why = _why_not()
    if why is not None:
        pytest.skip(why)
    snap = tmp_path_factory.mktemp("bpf-objects")
    return [Path(shutil.copy2(o, snap / o.name)) for o in _objects()]


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest, objects: list[Path]) -> dict[str, Outcome]:
    def boot(kernel: vm.Kernel) -> vm.Boot:
        return vm.boot(kernel, GUEST_CMD, files=objects, timeout=BOOT_TIMEOUT,
                       log_path=vm.VM_DIR / f"console-{kernel.name}.log")

    known = vm.kernels()
    out: dict[str, Outcome] = {}
    todo: dict[str, vm.Kernel] = {}
    for name in _wanted(request.session):
        k = known.get(name)
        if k is None:
            out[name] = f"build/vm/kernels.json has no {name} kernel: run `make vm`"
        elif not k.available:
            out[name] = f"kernel {name} unavailable: {k.reason}"
        else:
            todo[name] = k
    workers = max(1, min(len(todo), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {name: pool.submit(boot, k) for name, k in todo.items()}
        for name, fut in futures.items():
            try:
                out[name] = fut.result()
            except Exception as e:  # one kernel's trouble is its own tests' failure
                out[name] = e
    return out


def _boot_of(runs: dict[str, Outcome], series: str) -> vm.Boot:
    got = runs.get(series, f"kernel {series} was not booted")
    if isinstance(got, str):
        pytest.skip(got)
    if isinstance(got, BaseException):
        pytest.fail(f"booting {series} failed: {got!r}")
    for note in got.notes:
        warnings.warn(f"{series}: {note}", stacklevel=1)
    problem = got.problem()
    if problem is not None:
        notes = "".join(f"\n{n}" for n in got.notes)
        pytest.fail(f"{series} ({got.kernel.release}): {problem} after {got.seconds:.0f} s"
                    f"{notes}\nlast console lines:\n{got.tail()}")
    return got


@pytest.fixture(scope="module")
def host_programs(objects: list[Path]) -> list[tuple[str, str]]:
    """Every program of every object, as libbpf on this machine lists them."""
    res = subprocess.run([str(LOADALL), "--list", *map(str, objects)],
                         capture_output=True, text=True, check=True)
    return sorted((f[1], f[2]) for f in (line.split() for line in res.stdout.splitlines())
                  if len(f) >= 3 and f[0] == "LIST")


@pytest.mark.parametrize("series", SERIES)
def test_every_program_loads(runs: dict[str, Outcome], series: str) -> None:
    boot = _boot_of(runs, series)
    step = boot.steps.get("loadall")
    assert step is not None, f"the guest ran no loadall step:\n{boot.tail()}"
    results = boot.loadall()
    assert results, "loadall reported no program:\n" + "\n".join(step.lines[-30:])
    refused = [r for r in results.values() if not r.ok]
    if refused:
        pytest.fail(f"{len(refused)} of {len(results)} programs refused by "
                    f"{boot.kernel.package} {boot.kernel.version} "
                    f"(loadall took {step.seconds or 0:.0f} s):\n"
                    + "\n".join(r.describe() for r in refused), pytrace=False)
    assert step.rc == 0, "loadall failed:\n" + "\n".join(step.lines[-30:])


@pytest.mark.parametrize("series", SERIES)
def test_guest_tried_every_program_of_the_objects(runs: dict[str, Outcome], series: str,
                                                   host_programs: list[tuple[str, str]]
                                                   ) -> None:
    boot = _boot_of(runs, series)
    assert host_programs, "loadall --list found no program here"
    assert "loadall: objects from /run/vm/files" in boot.steps["loadall"].lines
    assert sorted(boot.loadall()) == host_programs
