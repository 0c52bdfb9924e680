"""Hostile file names through the stdout sink: every line is strict JSON and the exact
bytes come back (from name_b64 when present, else from name's UTF-8), both by Python and by
the README's jq recipe."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import StartPipeline, needs_root, read_jsonl, wait_for

pytestmark = needs_root

NAMES = [
    b"new\nline", b'quo"te', b"back\\slash", b"ctl\x01\x02\x1b\x7f", b"tab\there",
    b"cr\rret", b"unit\x1fsep", bytes(range(1, 0x20)),
    b"bad\xff\xfeutf8", b"\xed\xa0\x80surrogate", b"over\xc0\xaflong",
    "ünïcödé ✓ 😀".encode(), b"a" * 255, "é".encode() * 127 + b"x",
    b"\xff" * 255, b"trunc\xe2\x82",
]

CREATOR = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
for hexname in sys.argv[2:]:
    os.close(os.open(bytes.fromhex(hexname), os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=fd))
print(os.getpid())
"""

# the README's recipe for the exact bytes of each name
JQ = r'[.pid, (.name_b64 // (.name | @base64)), .truncated] | @tsv'


def test_names_recovered_exactly(tmp_path: Path, pin_root: Path,
                                 pipeline_proc: StartPipeline) -> None:
    assert all(len(n) <= 255 for n in NAMES)
    work = tmp_path / "w"
    work.mkdir()
    out = tmp_path / "stdout.jsonl"
    with open(out, "wb") as so:
        pl = pipeline_proc("--sink", "stdout", "--trigger", "tracepoint",
                           "--pin-dir", str(pin_root), stdout=so)
        res = subprocess.run([sys.executable, "-c", CREATOR, str(work),
                              *[n.hex() for n in NAMES]], capture_output=True, text=True,
                             check=True)
        pid = int(res.stdout)

        def mine() -> list[dict[str, object]]:
            return [e for e in read_jsonl(out) if e["pid"] == pid]

        wait_for(lambda: len(mine()) >= len(NAMES), 5, "every name")
        assert pl.stop() == 0, pl.stderr()
    events = mine()  # every line of the file parsed strictly, not only ours
    got = [base64.b64decode(str(e["name_b64"]), validate=True) if "name_b64" in e
           else str(e["name"]).encode("utf-8") for e in events]
    assert got == NAMES
    assert all(e["truncated"] is False for e in events)
    assert sorted(os.listdir(os.fsencode(work))) == sorted(NAMES)
    if shutil.which("jq") is None:
        return
    jq = subprocess.run(["jq", "-r", JQ], input=out.read_bytes(), capture_output=True,
                        check=True)
    rows = [r.split("\t") for r in jq.stdout.decode().splitlines() if r.startswith(f"{pid}\t")]
    assert [base64.b64decode(r[1]) for r in rows] == NAMES
    assert all(r[2] == "false" for r in rows)


def test_long_path_argument_is_truncated_and_flagged(tmp_path: Path, pin_root: Path,
                                                     pipeline_proc: StartPipeline) -> None:
    # a relative path of 300 bytes: longer than what a record keeps (255)
    deep = tmp_path / ("d" * 100) / ("e" * 100)
    deep.mkdir(parents=True)
    rel = f"{'d' * 100}/{'e' * 100}/{'f' * 98}"
    out = tmp_path / "trunc.jsonl"
    pl = pipeline_proc("--sink", "jsonl", "--output", str(out), "--trigger", "tracepoint",
                       "--pin-dir", str(pin_root))
    creator = subprocess.Popen([sys.executable, "-c",
                                f"import os; os.chdir({str(tmp_path)!r}); "
                                f"os.close(os.open({rel!r}, os.O_CREAT|os.O_WRONLY, 0o600))"])
    assert creator.wait(30) == 0

    def mine() -> list[dict[str, Any]]:
        # only the creator's records: other processes on the machine may truncate paths too
        if not out.exists():
            return []
        return [e for e in read_jsonl(out) if e["truncated"] and e["pid"] == creator.pid]

    wait_for(lambda: bool(mine()), 5, "the truncated record")
    assert pl.stop() == 0
    ev = mine()
    assert len(ev) == 1 and ev[0]["name"] == rel[:255]
