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

import json
import os
import shutil
import subprocess
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import vm

SERIES = ("6.12", "6.18")
LOADALL = vm.VM_DIR / "loadall"
LOADALL_SRC = vm.ROOT / "tests" / "vm" / "loadall.c"
TRIGGERS = ("lsm", "tracepoint")
GUEST_CMD = ["sh", "tests/vm/guest.sh", "loadall", *(f"scenario_{t}" for t in TRIGGERS)]
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


# The pipeline on each producer (tests/vm/scenario.py): on the LSM hooks, which this
# machine's kernel cannot attach, and on the tracepoint fallback, on each kernel.


@dataclass
class Scenario:
    made: list[dict[str, Any]]  # what the scenario created, and what each event must say
    events: list[dict[str, Any]]
    logs: list[str]
    rc: int
    final: dict[str, Any] | None
    pid: int  # the scenario's own process

    def event(self, path: str) -> dict[str, Any]:
        got = [e for e in self.events if e["path"] == path]
        assert len(got) == 1, f"{len(got)} events for {path}: {got}"
        return got[0]


def _scenario(runs: dict[str, Outcome], series: str, trigger: str) -> Scenario:
    boot = _boot_of(runs, series)
    step = boot.steps.get(f"scenario_{trigger}")
    assert step is not None, f"the guest ran no scenario_{trigger} step:\n{boot.tail()}"
    tail = "\n".join(step.lines[-40:])
    assert step.rc == 0, f"the scenario on {trigger} failed (rc {step.rc}):\n{tail}"
    made: list[dict[str, Any]] | None = None
    events, logs = [], []
    summary: dict[str, Any] | None = None
    for line in step.lines:
        tag, _, rest = line.partition(" ")
        if tag == f"MANIFEST-{trigger}":
            made = json.loads(rest)
        elif tag == f"EVENT-{trigger}":
            events.append(json.loads(rest))
        elif tag == f"LOG-{trigger}":
            logs.append(rest)
        elif tag == f"PIPELINE-{trigger}":
            summary = json.loads(rest)
    assert made is not None and summary is not None, f"no manifest or summary:\n{tail}"
    return Scenario(made, events, logs, summary["rc"], summary["final"], summary["pid"])


CASES = [(s, t) for s in SERIES for t in TRIGGERS]


@pytest.mark.parametrize(("series", "trigger"), CASES)
def test_scenario_whole_paths_calls_and_names(runs: dict[str, Outcome], series: str,
                                              trigger: str) -> None:
    """Every creation exactly once, with its whole path as the initial namespace sees it,
    its call and its name; nothing else (three files were filtered out)."""
    sc = _scenario(runs, series, trigger)
    assert sorted(e["path"] for e in sc.events if not e["path_truncated"]) == sorted(
        m["path"] for m in sc.made if not m.get("path_truncated"))
    assert len(sc.events) == len(sc.made) == 17
    for m in sc.made:
        if m.get("path_truncated"):
            continue
        e = sc.event(m["path"])
        assert (e["trigger"], e["syscall"], e["name"]) == (trigger, m["syscall"], m["name"]), e
        assert e["uid"] == m.get("uid", 0), e
        assert (e["mode"] & 0o170000 == 0o010000) == bool(m.get("fifo")), e  # S_IFIFO
        if trigger == "lsm":
            # the hooks see no call's flags or result: the record says none, whatever the
            # task's scratch record held from its previous event
            assert (e["ret"], e["open_flags"], e["excl"]) == (0, 0, False), e


@pytest.mark.parametrize(("series", "trigger"), CASES)
def test_scenario_long_path_is_a_flagged_suffix(runs: dict[str, Outcome], series: str,
                                               trigger: str) -> None:
    sc = _scenario(runs, series, trigger)
    (m,) = [m for m in sc.made if m.get("path_truncated")]
    (e,) = [e for e in sc.events if e["path_truncated"]]
    assert len(m["path"]) > 600 and e["path"].startswith("/")
    assert m["path"].endswith(e["path"]) and len(e["path"]) >= 400, e["path"]
    assert (e["syscall"], e["name"]) == (m["syscall"], m["name"])


@pytest.mark.parametrize(("series", "trigger"), CASES)
def test_scenario_namespace_and_process_tree(runs: dict[str, Outcome], series: str,
                                             trigger: str) -> None:
    sc = _scenario(runs, series, trigger)
    (ns,) = [m for m in sc.made if "mnt_ns" in m]
    others = {e["mnt_ns"] for e in sc.events if e["path"] != ns["path"]}
    assert sc.event(ns["path"])["mnt_ns"] == ns["mnt_ns"] and ns["mnt_ns"] not in others
    assert len(others) == 1 and 0 not in others
    (tree,) = [m for m in sc.made if "parents" in m]
    e = sc.event(tree["path"])
    # touch may have exited by the time the reader formats it: the table keeps it then
    assert e["comm"] == "touch" and e["proc"] in ("known", "exited"), e
    anc = e["ancestors"]
    assert [a["comm"] for a in anc[:len(tree["parents"])]] == tree["parents"], anc
    assert anc[1]["pid"] == tree["grandparent"] == sc.pid, anc
    assert e["ppid"] == anc[0]["pid"], e


@pytest.mark.parametrize(("series", "trigger"), CASES)
def test_scenario_filters_and_their_change(runs: dict[str, Outcome], series: str,
                                          trigger: str) -> None:
    """Judged in the kernel by the generation in force: 1 for every event but the last
    file, made after SIGHUP's generation 2 was in force; the file it newly excludes and
    the two the first excluded are absent (the count above)."""
    sc = _scenario(runs, series, trigger)
    want = [m.get("filter_gen", 1) for m in sc.made]
    got = [e["filter_gen"] for e in sorted(sc.events, key=lambda e: e["seq"])]
    assert got == want
    assert len([ln for ln in sc.logs if "generation 2 in force" in ln]) == 1, sc.logs


@pytest.mark.parametrize(("series", "trigger"), CASES)
def test_scenario_accounting_is_exact(runs: dict[str, Outcome], series: str,
                                      trigger: str) -> None:
    sc = _scenario(runs, series, trigger)
    assert sc.rc == 0 and sc.final is not None, sc.logs
    assert sorted(e["seq"] for e in sc.events) == list(range(len(sc.events)))
    f = sc.final
    assert f["produced"] == f["read"] == f["sinks"]["jsonl"]["delivered"] == len(sc.events)
    assert [ln for ln in sc.logs if ln.startswith("pipeline: trigger: ")] == [
        ln for ln in sc.logs if ln.startswith(f"pipeline: trigger: {trigger}")], sc.logs
