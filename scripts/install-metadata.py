"""Registers the checkout's distribution metadata in the virtualenv: the entry points of
pyproject.toml (the sink plugins of the "arena_pipeline.sinks" group) are found through
importlib.metadata only in an installed distribution's .dist-info directory, and the
checkout is put on the path by a .pth file (scripts/install-console.sh), not installed.
Written from pyproject.toml on every set-up, so the two never disagree.

    python scripts/install-metadata.py ROOT
(run with the virtualenv's python: its purelib directory receives the metadata)
"""

from __future__ import annotations

import shutil
import sys
import sysconfig
import tomllib
from pathlib import Path


def main(root: Path) -> int:
    with open(root / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    name, version = project["name"], project["version"]
    site = Path(sysconfig.get_path("purelib"))
    dist = name.replace("-", "_")
    for old in site.glob(f"{dist}-*.dist-info"):
        shutil.rmtree(old)
    target = site / f"{dist}-{version}.dist-info"
    target.mkdir()
    (target / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = []
    for group, entries in project.get("entry-points", {}).items():
        lines.append(f"[{group}]")
        lines += [f"{key} = {value}" for key, value in entries.items()]
        lines.append("")
    (target / "entry_points.txt").write_text("\n".join(lines))
    (target / "INSTALLER").write_text("arena-pipeline set-up\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
