"""python -m pipeline: see pipeline.cli.

Started by an interpreter that lacks the project's dependencies (Debian's python3 under
sudo, rather than the project's .venv), the imports below would end in a traceback; this
checks first, with the standard library alone, and says in one line how to run it. So it
must stay importable by any Python 3: no newer syntax before the check.
"""

import importlib.util
import sys

NEEDED = ("orjson", "uvloop", "aiofiles")
EXIT_BAD_INPUT = 2


def _missing() -> list:  # type: ignore[type-arg]
    if sys.version_info < (3, 11):  # noqa: UP036 (read by any python3: see above)
        return ["Python >= 3.11"]
    gone = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    # the extension modules (setup.py): the runtime, the data structures, the benchmarks,
    # the linearizability checker
    for ext in ("pipeline._core", "pipeline._ds", "pipeline.bench._native",
                "pipeline._linearize"):
        if importlib.util.find_spec(ext) is None:
            gone.append("the built extension " + ext + " (make setup)")
    return gone


def _check() -> None:
    gone = _missing()
    if gone:
        sys.stderr.write(
            "pipeline: this Python ({}) lacks {}; run it as root with the project's environment: "
            "sudo .venv/bin/python -m pipeline, or sudo arena-pipeline (both made by "
            "sudo ./make.sh setup)\n".format(sys.executable, ", ".join(gone)))
        sys.exit(EXIT_BAD_INPUT)


if __name__ == "__main__":
    _check()
    from pipeline.cli import main

    sys.exit(main())
