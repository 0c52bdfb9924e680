"""The codes of include/ds/ds_api.h reach Python whole: the extension builds the enums
of pipeline.ds from its C tables, so these tests hold those tables to the header (a code
added in C but not exported fails here) and the type stub to the module."""

from __future__ import annotations

import ast
import enum
import re
from pathlib import Path

import pytest

from pipeline import _ds, ds

ROOT = Path(__file__).resolve().parent.parent
HEADER = (ROOT / "include" / "ds" / "ds_api.h").read_text()
STUB = ROOT / "pipeline" / "_ds.pyi"


def _header_enum(c_name: str, prefix: str) -> dict[str, int]:
    """NAME: value of `enum c_name`'s members, the counting sentinels (PREFIX_ _X) left out."""
    body = re.search(r"enum " + c_name + r" \{(.*?)\};", HEADER, re.S)
    assert body is not None, f"enum {c_name} not in ds_api.h"
    members = re.findall(r"\b" + prefix + r"([A-Z][A-Z0-9_]*)\s*=\s*(\d+)", body.group(1))
    return {name: int(value) for name, value in members}


def _header_flags() -> dict[str, int]:
    return {n: int(v, 16) for n, v in re.findall(r"#define DS_F_(\w+) (0x[0-9a-fA-F]+)", HEADER)}


def _members(cls: type[enum.Enum]) -> dict[str, int]:
    return {m.name: int(m.value) for m in cls}


HEADER_TABLES = {
    "DsResult": _header_enum("ds_result", "DS_"),
    "DsOp": _header_enum("ds_op", "DS_OP_"),
    "DsFlag": _header_flags(),
    "DsModel": _header_enum("ds_model", "DS_MODEL_"),
}


def test_header_is_read() -> None:
    """The parsing above finds what the header has (else the next test compares nothing)."""
    assert len(HEADER_TABLES["DsResult"]) == 8 and HEADER_TABLES["DsResult"]["OK"] == 0
    assert HEADER_TABLES["DsOp"]["INSERT"] == 1 and len(HEADER_TABLES["DsOp"]) == 8
    assert HEADER_TABLES["DsFlag"]["KEYED"] == 0x04 and len(HEADER_TABLES["DsFlag"]) == 8
    assert HEADER_TABLES["DsModel"] == {"ANY": 0, "MPMC": 1, "MPSC": 2, "SPSC": 3}


@pytest.mark.parametrize("cls", sorted(HEADER_TABLES))
def test_every_code_in_c_has_its_python_name(cls: str) -> None:
    """Each enum of the extension has exactly the header's names, with its values (for DsOp:
    the names of the op_names table in pipeline/_ds/ds.c, upper-cased)."""
    assert _members(getattr(_ds, cls)) == HEADER_TABLES[cls]


def test_pipeline_ds_uses_the_extensions_enums() -> None:
    assert (ds.Result, ds.Op, ds.Flag, ds.Model) == (_ds.DsResult, _ds.DsOp, _ds.DsFlag,
                                                     _ds.DsModel)
    assert issubclass(ds.Flag, enum.IntFlag) and issubclass(ds.Result, enum.IntEnum)


def _stub_members() -> dict[str, list[str]]:
    tree = ast.parse(STUB.read_text())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name in HEADER_TABLES:
            out[node.name] = [t.id for a in node.body if isinstance(a, ast.Assign)
                              for t in a.targets if isinstance(t, ast.Name)]
    return out


def test_stub_declares_the_same_members() -> None:
    """The type checker sees the members the module has, no more, no fewer."""
    stub = _stub_members()
    assert set(stub) == set(HEADER_TABLES)
    for cls, names in stub.items():
        assert names == [m.name for m in getattr(_ds, cls)], cls

