"""Hostile file names through the stdout sink and a real jq: the exact bytes
come back (from name_b64 when present, else from name's UTF-8)."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, needs_root, wait_for

pytestmark = [needs_root, pytest.mark.skipif(shutil.which("jq") is None, reason="needs jq")]

NAMES = [
    b"new\nline", b'quo"te', b"back\\slash", b"ctl\x01\x02\x1b\x7f", b"tab\there",
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

JQ = r'[.pid, (.name_b64 // (.name | @base64)), .truncated] | @tsv'


def test_names_recovered_exactly_through_jq(tmp_path: Path, pin_root: Path) -> None:
    assert all(len(n) <= 255 for n in NAMES)
    work = tmp_path / "w"
    work.mkdir()
    out = tmp_path / "jq.out"
    with open(out, "wb") as sink:
        pl = subprocess.Popen([sys.executable, "-m", "pipeline", "--sink", "stdout",
                               "--trigger", "tracepoint", "--pin-dir", str(pin_root)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        jq = subprocess.Popen(["jq", "-r", "--unbuffered", JQ], stdin=pl.stdout, stdout=sink)
        assert pl.stdout is not None and pl.stderr is not None
        pl.stdout.close()
        for raw in pl.stderr:
            if b"ready in" in raw:
                break
        res = subprocess.run([sys.executable, "-c", CREATOR, str(work),
                              *[n.hex() for n in NAMES]], capture_output=True, text=True,
                             check=True)
        pid = res.stdout.strip()

        def rows() -> list[list[str]]:
            return [ln.split("\t") for ln in out.read_text().splitlines() if
                    ln.startswith(pid + "\t")]

        wait_for(lambda: len(rows()) >= len(NAMES), 5, "every name through jq")
        pl.send_signal(2)
        assert pl.wait(20) == 0
        assert jq.wait(20) == 0
    got = [base64.b64decode(r[1]) for r in rows()]
    assert got == NAMES
    assert all(r[2] == "false" for r in rows())
    assert sorted(os.listdir(os.fsencode(work))) == sorted(NAMES)


def test_long_path_argument_is_truncated_and_flagged(tmp_path: Path, pin_root: Path) -> None:
    # a relative path of 300 bytes: longer than what a record keeps (255)
    deep = tmp_path / ("d" * 100) / ("e" * 100)
    deep.mkdir(parents=True)
    rel = f"{'d' * 100}/{'e' * 100}/{'f' * 98}"
    out = tmp_path / "trunc.jsonl"
    from conftest import PipelineProc, read_jsonl

    pl = PipelineProc("--sink", "jsonl", "--output", str(out), "--trigger", "tracepoint",
                      "--pin-dir", str(pin_root))
    subprocess.run([sys.executable, "-c",
                    f"import os; os.chdir({str(tmp_path)!r}); os.close(os.open({rel!r}, "
                    "os.O_CREAT|os.O_WRONLY, 0o600))"], check=True)
    wait_for(lambda: out.exists() and any(e["truncated"] for e in read_jsonl(out)), 5,
             "the truncated record")
    assert pl.stop() == 0
    ev = [e for e in read_jsonl(out) if e["truncated"]]
    assert len(ev) == 1 and ev[0]["name"] == rel[:255]
