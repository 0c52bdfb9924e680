"""`python -m pipeline bench --quick`: one real run (every part, real BPF programs, the real
load programs, bpftrace when installed) shared by the tests of this module, which check what
it wrote: results.json against the schema the project ships, report.md's targets against the
measured figures, and every plot file. Nothing here judges a time."""

from __future__ import annotations

import json
import os
import statistics
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from pipeline.bench.part_overhead import then_files_for
from tests.conftest import ROOT, needs_root

pytestmark = needs_root

SCHEMA = ROOT / "pipeline" / "bench" / "results.schema.json"
PARTS = ("transport", "e2e", "latency", "idle", "startup", "ds", "scaling", "overhead", "race",
         "nats", "kcost", "proccost", "linearize")
# every plot, and words its axis labels must hold
PLOTS = {
    "transport": ("M events/s", "contender"),
    "e2e": ("M events/s written", "contender"),
    "latency_sink": ("percentile", "latency (ms)", "fraction of files"),
    "latency_queues": ("percentile", "latency (us)"),
    "throughput_hash_threads": ("user threads", "M ops/s"),
    "throughput_workers": ("user worker processes", "M ops/s"),
    "arena_memory": ("seconds since the arena was pinned", "MiB"),
    "overhead": ("contender", "per openat+close", "ns per captured event"),
}
SVG = "{http://www.w3.org/2000/svg}"


def _bench(*args: str, out: Path | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pipeline", "bench", *args]
    if out is not None:
        cmd += ["--output", str(out)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          check=False)


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "new" / "dir"
    r = _bench("--quick", out=out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    return out


@pytest.fixture(scope="module")
def results(quick: Path) -> dict[str, Any]:
    return dict(json.loads((quick / "results.json").read_text()))


def _figures(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(name, f) for name, part in results["parts"].items()
            for q in part["questions"] for f in q["figures"]]


def test_quick_writes_results_report_and_every_plot(quick: Path,
                                                    results: dict[str, Any]) -> None:
    assert list(results["parts"]) == list(PARTS)
    assert {n: p["status"] for n, p in results["parts"].items()} == dict.fromkeys(PARTS, "ok")
    assert results["mode"] == "quick"
    made = sorted(p for part in results["parts"].values() for p in part["plots"])
    assert made == sorted(PLOTS)
    names = {p.name for p in quick.iterdir()}
    expected = {"results.json", "report.md"} | {f"{p}.{x}" for p in PLOTS for x in ("png", "svg")}
    assert names == expected  # and no temporary file left behind
    report = (quick / "report.md").read_text()
    for p in PLOTS:
        assert f"]({p}.png)" in report


def test_results_validate_against_the_shipped_schema(results: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(results, schema, cls=jsonschema.Draft202012Validator)
    # the schema can fail: a figure without its median, a target met without a target
    name, _ = _figures(results)[0]
    broken = json.loads(json.dumps(results))
    del broken["parts"][name]["questions"][0]["figures"][0]["median"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema, cls=jsonschema.Draft202012Validator)
    broken = json.loads(json.dumps(results))
    untargeted = next(f for _, f in _figures(broken) if f["target"] is None)
    untargeted["met"] = True
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema, cls=jsonschema.Draft202012Validator)


def test_every_figure_is_the_median_of_every_round(results: dict[str, Any]) -> None:
    figs = _figures(results)
    assert len(figs) > 40
    for name, f in figs:
        assert len(f["rounds"]) == results["rounds"] == 3, (name, f["name"])
        assert f["median"] == pytest.approx(statistics.median(f["rounds"]))
        assert (f["min"], f["max"]) == (min(f["rounds"]), max(f["rounds"]))


def _met(cmp: str, x: float, v: float) -> bool:
    return {">=": x >= v, "<=": x <= v, "<": x < v, ">": x > v}[cmp]


def test_every_target_is_judged_on_a_measured_median(quick: Path,
                                                     results: dict[str, Any]) -> None:
    targeted = [(n, f) for n, f in _figures(results) if f["target"] is not None]
    assert len(targeted) >= 20
    for _, f in targeted:
        assert f["met"] is _met(f["target"]["cmp"], f["median"], f["target"]["value"])
    # report.md: the headline table holds every targeted figure once, each row with its
    # median, spread, target and verdict, matching results.json
    report = (quick / "report.md").read_text()
    head = report.split("## Targets", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in head.splitlines()
            if ln.startswith("| ") and not ln.startswith(("| part ", "| --- "))]
    assert [(r[0], r[1]) for r in rows] == [(n, f["name"]) for n, f in targeted]
    for r, (_, f) in zip(rows, targeted, strict=True):
        assert r[3] and r[4] == str(len(f["rounds"])) and r[5].startswith(f["target"]["cmp"])
        assert r[6] == ("met" if f["met"] else "**not met**")
    # every table row of the report that names a target carries a verdict
    for ln in report.splitlines():
        cells = [c.strip() for c in ln.strip("|").split("|")]
        if ln.startswith("| ") and len(cells) >= 6 and cells[-2][:2] in ("<=", ">=", "< ", "> "):
            assert cells[-1] in ("met", "**not met**"), ln


def test_each_contender_captures_every_creation(results: dict[str, Any]) -> None:
    raw = results["parts"]["overhead"]["raw"]
    files = raw["files_per_round"]
    then = then_files_for(files)
    assert [(r["created"], r["then_created"]) for r in raw["rounds"]["none"]] == [(files, then)] * 3
    assert [r["captured"] for r in raw["rounds"]["none"]] == [0] * 3
    for who in ("pipeline", "pipeline_kernel", "bpftrace"):
        if who not in raw["rounds"]:
            continue
        assert [r["captured"] for r in raw["rounds"][who]] == [files + then] * 3, who
        # the kernel counted the tracer's programs during the second loop only
        assert all(then <= r["bpf_run_cnt"] < files and r["bpf_run_time_ns"] > 0
                   for r in raw["rounds"][who]), who


def test_the_floor_runs_an_empty_program_per_creation_and_detaches(
        results: dict[str, Any]) -> None:
    raw = results["parts"]["overhead"]["raw"]
    files = raw["files_per_round"]
    rounds = raw["rounds"]["floor"]
    then = then_files_for(files)
    assert [r["created"] for r in rounds] == [files] * 3
    # one program per tracepoint, each run once per creation of the counted loop (and for
    # other processes' calls meanwhile), capturing nothing
    assert all(r["bpf_progs"] == 8 and then <= r["bpf_run_cnt"] < files and r["captured"] == 0
               for r in rounds)
    assert not [p for p in os.listdir("/sys/fs/bpf") if p.startswith("arena-pipeline-floor-")]
    names = [f["name"] for q in results["parts"]["overhead"]["questions"]
             for f in q["figures"]]
    assert "pipeline: overhead beyond the floor" in names


def test_a_baseline_that_cannot_run_is_reported_with_its_reason(
        results: dict[str, Any]) -> None:
    from pipeline.bench.tools import bcc_missing, bpftrace_missing

    e2e = results["parts"]["e2e"]
    why = bcc_missing()
    if why is None:
        assert "bcc" in e2e["raw"]["rounds"]
        assert not e2e["skipped"]
    else:
        assert e2e["skipped"] == [{"what": "BCC", "reason": why}]
        assert "bcc" not in e2e["raw"]["rounds"]
    over = results["parts"]["overhead"]
    assert ("bpftrace" in over["raw"]["rounds"]) is (bpftrace_missing() is None)


def test_bpftrace_missing_names_the_fix(monkeypatch: pytest.MonkeyPatch,
                                       tmp_path: Path) -> None:
    from pipeline.bench.tools import bpftrace_missing

    monkeypatch.setenv("PATH", str(tmp_path))
    assert bpftrace_missing() == ("bpftrace is not installed: run `make setup` as root "
                                  "(installs Debian's bpftrace package)")


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    w, h = struct.unpack(">II", data[16:24])
    return w, h


def test_every_plot_is_a_valid_png_and_svg_with_data_and_labelled_axes(quick: Path) -> None:
    for name, labels in PLOTS.items():
        png = (quick / f"{name}.png").read_bytes()
        w, h = _png_size(png)
        assert w >= 300 and h >= 200 and len(png) > 10_000, name
        assert png.endswith(b"IEND\xaeB`\x82"), name
        root = ET.fromstring((quick / f"{name}.svg").read_bytes())
        assert root.tag == f"{SVG}svg"
        text = " ".join("".join(t.itertext()) for t in root.iter(f"{SVG}text"))
        for label in labels:
            assert label in text, (name, label)
        # the data: matplotlib draws each line (line2d_*) and bar (patch_*) as a group
        groups = {g.get("id", "") for g in root.iter(f"{SVG}g")}
        drawn = [g for g in groups if g.startswith(("line2d_", "patch_", "PolyCollection_",
                                                    "FillBetweenPolyCollection_"))]
        assert len(drawn) >= 4, (name, sorted(groups)[:20])
        paths = [p.get("d", "") for p in root.iter(f"{SVG}path")]
        assert sum(1 for d in paths if d.count("L") >= 2) >= 2, name


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    r = _bench("--only", "nosuch", out=tmp_path / "x")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"pipeline: bench: unknown part(s) nosuch; choose from {', '.join(PARTS)}"]
    assert not (tmp_path / "x").exists()
    r = _bench("--rounds", "3", "--only", "idle", out=tmp_path / "x")
    assert r.returncode == 2 and "--rounds" in r.stderr and "Traceback" not in r.stderr


def test_output_through_a_planted_link_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)  # writable by others, not sticky: another user could swap it
    r = _bench("--only", "startup", out=shared / "res")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--output" in lines[0] and "writable by other users" in lines[0]
    assert not (shared / "res").exists()
    # a link planted where a result file goes is replaced, never written through
    target = tmp_path / "victim"
    target.write_text("keep")
    out = tmp_path / "own"
    out.mkdir()
    (out / "report.md").symlink_to(target)
    r = _bench("--only", "startup", out=out)
    assert r.returncode == 2, r.stderr
    assert "symbolic link" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert target.read_text() == "keep"


def test_createload_refuses_a_directory_not_on_tmpfs(tmp_path: Path) -> None:
    from pipeline.bench.tools import program

    exe = program("createload")
    disk = ROOT / "build"  # the checkout, not on tmpfs unless the machine put it there
    fstype = subprocess.run(["stat", "-f", "-c", "%T", str(disk)], capture_output=True,
                            text=True, check=True).stdout.strip()
    if fstype != "tmpfs":
        r = subprocess.run([str(exe), "--dir", str(disk), "--files", "3"], capture_output=True,
                           text=True, check=False)
        assert r.returncode == 2
        assert r.stderr.splitlines()[0] == (f"createload: {disk} is not on tmpfs; give a "
                                            "directory on tmpfs (e.g. under /dev/shm)")
    shm = Path("/dev/shm") / f"ap-test-createload-{os.getpid()}"
    shm.mkdir()
    try:
        r = subprocess.run([str(exe), "--dir", str(shm), "--files", "1000"],
                           capture_output=True, text=True, check=True)
        done = json.loads(r.stdout)
        assert set(done) == {"created", "seconds", "cpu_seconds"}
        assert done["created"] == 1000 and done["seconds"] > 0 and done["cpu_seconds"] > 0
        assert list(shm.iterdir()) == []  # removed after the timed loop
    finally:
        shm.rmdir()
