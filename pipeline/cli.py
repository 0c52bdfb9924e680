"""Command line: `python -m pipeline [flags]` runs the pipeline;
`python -m pipeline bench|burst` run the tools around it."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from typing import Any

from .config import TRIGGERS, Config, load_file
from .errors import EXIT_BAD_INPUT, EXIT_OK, PipelineError
from .flags import Parser
from .kernel import check_privileges, eprint
from .ranges import PIPELINE, SINK_JSONL
from .sinks.base import SinkError
from .stdio import check_stdio, to_devnull

SUBCOMMANDS = ("bench", "burst", "ds", "stress")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m pipeline",
        description="File-creation events from the kernel, through a BPF arena queue, "
                    "to sinks. Subcommands: bench, burst (python -m pipeline bench --help).")
    p.add_argument("--config", metavar="PATH",
                   help="TOML config (configs/*.toml); flags override it")
    p.add_argument("--sink", action="append", metavar="NAME",
                   help="stdout, jsonl, socket or a plugin; repeat or comma-separate for several")
    p.add_argument("--output", metavar="PATH", help="jsonl sink: file to append to")
    p.add_argument("--rotate-bytes", type=SINK_JSONL["rotate_bytes"].flag(), metavar="N",
                   help="jsonl sink: rotate the file when it would pass N bytes (0: never)")
    p.add_argument("--connect", metavar="HOST:PORT|unix:PATH", help="socket sink: listener")
    p.add_argument("--trigger", choices=TRIGGERS,
                   help="file-creation producer: lsm.s/inode_create where it attaches, else "
                        "syscall tracepoints (auto, the default); none attaches nothing; "
                        "getppid is the benchmark's load (needs --filter-pid)")
    _number(p, "--duration", "SECONDS", "stop after this long (0: run until a signal)")
    _number(p, "--max-events", "N", "stop after N events (0: no limit)")
    p.add_argument("--filter-comm", metavar="COMM", help="only tasks with this comm (in kernel)")
    _number(p, "--filter-pid", "PID", "only this process (in kernel; 0: every process)")
    p.add_argument("--no-ignore-self", dest="ignore_self", action="store_false", default=None,
                   help="also report files the pipeline itself creates")
    _number(p, "--stats", "SECONDS", "print counters to stderr every SECONDS (flag alone: 1)",
            nargs="?", const=1.0)
    _number(p, "--queue-capacity", "N", "arena queue size in events")
    _number(p, "--arena-pages", "N", "arena size in 4 KiB pages")
    _number(p, "--batch", "N", "events per drain at most")
    _number(p, "--spin-us", "US", "busy-poll window before sleeping")
    p.add_argument("--pin-dir", metavar="DIR", help="bpffs directory for this run's pins")
    p.add_argument("--verbose", action="store_true", default=None, help="libbpf debug output")
    p.add_argument("--check-config", action="store_true",
                   help="check the flags, the config file and every sink's options, print the "
                        "resulting configuration as JSON on stdout and exit; loads nothing")
    return p


def _number(p: argparse.ArgumentParser, flag: str, metavar: str, text: str,
            **kw: Any) -> None:
    """A numeric flag whose type and range are its config key's."""
    rng = PIPELINE[flag[2:].replace("-", "_")]
    p.add_argument(flag, type=rng.flag(), metavar=metavar,
                   help=f"{text}; {rng.describe()}", **kw)


# flag attribute -> (sink name, option name)
_SINK_FLAGS = {"output": ("jsonl", "output"), "rotate_bytes": ("jsonl", "rotate_bytes"),
               "connect": ("socket", "connect")}


def make_config(args: argparse.Namespace) -> Config:
    cfg = Config()
    if args.config:
        load_file(args.config, cfg)
    for key in ("trigger", "duration", "max_events", "filter_comm", "filter_pid", "ignore_self",
                "stats", "queue_capacity", "arena_pages", "batch", "spin_us", "pin_dir",
                "verbose"):
        value = getattr(args, key)
        if value is not None:
            setattr(cfg, key, value)
    if args.sink:
        cfg.sinks = [n.strip() for s in args.sink for n in s.split(",") if n.strip()]
    for attr, (sink, opt) in _SINK_FLAGS.items():
        value = getattr(args, attr)
        if value is not None:
            cfg.sink_options.setdefault(sink, {})[opt] = value
    return cfg.validate()


def check_sink_options(cfg: Config) -> dict[str, dict[str, Any]]:
    """Every sink named exists and every [sink.NAME] table is valid, in use or not
    (a typo in an unused table is still a typo); returns each one's options with
    the defaults filled in, or raises SinkError."""
    # imported here: the sinks' dependencies are not needed to say "run as root"
    from .sinks.registry import get_sink_class

    return {name: get_sink_class(name).validate_options(cfg.sink_options.get(name, {}))
            for name in (*cfg.sinks, *cfg.sink_options)}


def run_main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    cfg = make_config(args)
    if args.check_config:
        effective = {**dataclasses.asdict(cfg), "sink_options": check_sink_options(cfg)}
        sys.stdout.write(json.dumps(effective, default=str) + "\n")
        return 0
    # before anything heavier is imported: the commonest mistake gets the
    # quickest, clearest answer
    check_privileges(cfg.trigger, cfg.pin_dir)
    from .run import run_pipeline

    return run_pipeline(cfg)


def one_line(msg: str) -> str:
    """The message as one printable line, whatever a value quoted in it held
    (newlines, terminal escapes, NUL)."""
    flat = " ".join(msg.split())
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in flat)


def main(argv: Sequence[str] | None = None) -> int:
    # First of all, for every subcommand: nothing may be opened while fd 1 or 2 is free.
    bad = check_stdio()
    if bad is not None:
        return bad
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "bench":
            from .bench.cli import main as bench_main
            return bench_main(argv[1:])
        if argv and argv[0] == "burst":
            from .burst import main as burst_main
            return burst_main(argv[1:])
        if argv and argv[0] == "ds":
            from .ds_cli import main as ds_main
            return ds_main(argv[1:])
        if argv and argv[0] == "stress":
            from .stress import main as stress_main
            return stress_main(argv[1:])
        return run_main(argv)
    except (PipelineError, SinkError) as e:
        eprint(one_line(str(e)))
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        # A subcommand's reader went away (`ds list | head -n 1`): as for the pipeline's
        # stdout sink, a closed pipe on stdout is a normal end.
        to_devnull(1)
        return EXIT_OK
    except KeyboardInterrupt:
        return 130
