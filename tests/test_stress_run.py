"""Stress runs end to end (real worker processes, real kernel programs): the smoke
config on every structure with every check on, a worker killed with SIGKILL, an arena
run out of pages, the JSON output and the recorded history. Counts are exact; nothing
here asserts a time."""

from __future__ import annotations

import json
import struct
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from test_stress import ROOT, needs_root, stress

from pipeline.ds import Op, Result, meta_of, registry

pytestmark = needs_root
SMOKE = str(ROOT / "configs" / "stress-smoke.toml")
REC = struct.Struct("<QQQQIBBH")
KERNEL = 0x80000000  # struct ds_hist_rec.agent of kernel agent i: KERNEL | i


def _json(res: Any) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(res.stdout)
    return out


@pytest.mark.parametrize("name", [m.name for m in registry()])
def test_smoke_every_structure(name: str, tmp_path: Path) -> None:
    hist = tmp_path / "h.bin"
    res = stress(name, "--config", SMOKE, "--format", "json", "--history", str(hist))
    r = _json(res)
    assert res.returncode == 0, res.stderr
    assert r["linearizability"]["ok"] is True, r["linearizability"]
    assert all(r["checks"]["invariants"].values()), r["checks"]
    records = hist.read_bytes()
    assert len(records) % REC.size == 0
    n = len(records) // REC.size
    assert r["linearizability"]["records"] == n
    meta = meta_of(name)
    ops = 20000
    kern = r["per_kernel_thread"]
    recs = [REC.unpack_from(records, i * REC.size) for i in range(n)]
    # every kernel agent (smoke: at least one per structure) recorded each of its
    # operations, as agent KERNEL | index
    per = Counter(x[4] for x in recs)
    assert kern and [k["history_records"] for k in kern] == [k["ops"] for k in kern]
    assert [per[KERNEL | i] for i in range(len(kern))] == [k["ops"] for k in kern]
    assert r["kernel"]["ops"] == sum(k["ops"] for k in kern) > 0
    if meta.keyed:
        workers = 2
        assert r["user"]["ops"] == workers * ops
        prefill = round(0.5 * (512 if name == "list" else 4096))
        # the driver's prefill, every user op and every kernel op
        assert n == prefill + workers * ops + r["kernel"]["ops"]
    else:
        c = r["checks"]
        user_producers = 1 if name == "spsc" else 2
        kernel_pushed = sum(k["ops"] - k["failed"] for k in kern if k["role"] == "producer")
        assert c["pushed"] == user_producers * ops + kernel_pushed
        assert c["pushed"] == c["popped_by_consumers"] + c["left_at_end"]
        pushes = [x for x in recs if x[5] == Op.INSERT and x[6] == Result.OK]
        pops = [x for x in recs if x[5] == Op.POP and x[6] == Result.OK]
        assert len(pushes) == len(pops) == c["pushed"]
        assert sorted(x[2] for x in pushes) == sorted(x[2] for x in pops)
        assert all(x[0] <= x[1] for x in recs)


def test_sigkill_of_a_worker_is_reported_and_the_rest_verified() -> None:
    res = stress("hash", "-t", "2", "-k", "1", "--duration", "3", "--kill-worker", "1",
                 "-v", "--format", "json")
    assert res.returncode == 0, res.stderr
    r = _json(res)
    assert r["dead_workers"] == [1]
    assert [w["status"] for w in r["per_worker"]] == ["killed by SIGKILL", "ok"]
    assert r["per_worker"][1]["ops"] > 0 and r["per_kernel_thread"][0]["ops"] > 0
    assert all(r["checks"]["invariants"].values()), r["checks"]
    assert r["ok"]


def test_arena_exhaustion_is_counted_nomem() -> None:
    ops = 3_000_000
    res = stress("hash", "-t", "1", "-k", "0", "-w", "insert-only", "--keys", "4000000",
                 "--prefill", "0", "--pages", "512", "-o", str(ops), "-v", "--format", "json")
    assert res.returncode == 0, res.stderr
    r = _json(res)
    fails = r["per_worker"][0]["failures"]["insert"]
    assert fails["NOMEM"] > 0
    assert r["memory"]["allocation_failures"] >= fails["NOMEM"]
    # nothing else failed, and every insert that did not fail is in the map
    assert set(fails) <= {"NOMEM", "EXISTS"}
    assert r["checks"]["final_keys"] == ops - fails["NOMEM"] - fails.get("EXISTS", 0)
    assert all(r["checks"]["invariants"].values())


def test_json_output_and_file_agree(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    res = stress("hash", "-t", "2", "--threads", "2", "-k", "1", "-o", "5000", "--keys", "1000",
                 "-w", "insert=50,search=40,delete=10", "--seed", "7", "-v",
                 "--format", "json", "--json", str(path))
    assert res.returncode == 0, res.stderr
    r = _json(res)
    assert json.loads(path.read_text()) == r
    assert r["mix"] == {"insert": 50, "delete": 10, "search": 40}
    assert [w["ops"] for w in r["per_worker"]] == [10000, 10000]
    assert [len(w["per_thread"]) for w in r["per_worker"]] == [2, 2]
    assert r["user"]["ops"] == 20000
    assert r["total"]["ops"] == 20000 + r["kernel"]["ops"]
    assert set(r["user"]["latency_ns"]) == {"p50", "p90", "p99", "p99.9", "max", "samples"}
    assert set(r["memory"]) >= {"bytes_in_use", "high_water_bytes", "pages_populated",
                                "pages_returned", "reclamation_backlog"}
    # searches that missed are failures by code; no other code shows up
    codes = {c for kind in r["total"]["failures"].values() for c in kind}
    assert codes <= {"NOT_FOUND", "EXISTS"}
    table = stress("hash", "-t", "1", "-k", "0", "-o", "1000", "-v")
    assert table.returncode == 0, table.stderr
    assert "worker 1" in table.stdout and table.stdout.rstrip().endswith("result: ok")


def test_history_file_holds_every_operation(tmp_path: Path) -> None:
    path = tmp_path / "h.bin"
    res = stress("skiplist", "-t", "2", "-k", "0", "-o", "3000", "--keys", "256",
                 "--prefill", "0", "--history", str(path), "--format", "json")
    assert res.returncode == 0, res.stderr
    raw = path.read_bytes()
    recs = [REC.unpack_from(raw, i) for i in range(0, len(raw), REC.size)]
    assert len(recs) == 6000
    assert sorted({x[4] for x in recs}) == [0, 256]  # worker * 256 + thread
    assert all(x[0] <= x[1] and 1 <= x[2] <= 256 for x in recs)
    ok = [x for x in recs if x[6] == Result.OK and x[5] in (Op.SEARCH, Op.DELETE)]
    assert all(x[3] == x[2] for x in ok)  # values equal their keys
