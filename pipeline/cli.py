"""Command line: `python -m pipeline [flags]` runs the pipeline;
`python -m pipeline bench|burst` run the tools around it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .config import TRIGGERS, Config, load_file
from .errors import EXIT_BAD_INPUT, PipelineError
from .kernel import check_privileges, eprint
from .sinks.base import SinkError

SUBCOMMANDS = ("bench", "burst", "ds", "stress")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="File-creation events from the kernel, through a BPF arena queue, "
                    "to sinks. Subcommands: bench, burst (python -m pipeline bench --help).")
    p.add_argument("--config", metavar="PATH",
                   help="TOML config (configs/*.toml); flags override it")
    p.add_argument("--sink", action="append", metavar="NAME",
                   help="stdout, jsonl, socket or a plugin; repeat or comma-separate for several")
    p.add_argument("--output", metavar="PATH", help="jsonl sink: file to append to")
    p.add_argument("--rotate-bytes", type=int, metavar="N",
                   help="jsonl sink: rotate the file when it would pass N bytes (0: never)")
    p.add_argument("--connect", metavar="HOST:PORT|unix:PATH", help="socket sink: listener")
    p.add_argument("--trigger", choices=TRIGGERS,
                   help="file-creation producer: lsm.s/inode_create where it attaches, else "
                        "syscall tracepoints (auto, the default); none attaches nothing; "
                        "getppid is the benchmark's load (needs --filter-pid)")
    p.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long")
    p.add_argument("--max-events", type=int, metavar="N", help="stop after N events")
    p.add_argument("--filter-comm", metavar="COMM", help="only tasks with this comm (in kernel)")
    p.add_argument("--filter-pid", type=int, metavar="PID", help="only this process (in kernel)")
    p.add_argument("--no-ignore-self", dest="ignore_self", action="store_false", default=None,
                   help="also report files the pipeline itself creates")
    p.add_argument("--stats", type=float, nargs="?", const=1.0, metavar="SECONDS",
                   help="print counters to stderr every SECONDS (default 1)")
    p.add_argument("--queue-capacity", type=int, metavar="N", help="arena queue size in events")
    p.add_argument("--arena-pages", type=int, metavar="N", help="arena size in 4 KiB pages")
    p.add_argument("--batch", type=int, metavar="N", help="events per drain at most")
    p.add_argument("--spin-us", type=int, metavar="US", help="busy-poll window before sleeping")
    p.add_argument("--pin-dir", metavar="DIR", help="bpffs directory for this run's pins")
    p.add_argument("--verbose", action="store_true", default=None, help="libbpf debug output")
    return p


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


def run_main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    cfg = make_config(args)
    # before anything heavier is imported: the commonest mistake gets the
    # quickest, clearest answer
    check_privileges()
    from .run import run_pipeline

    return run_pipeline(cfg)


def main(argv: Sequence[str] | None = None) -> int:
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
        eprint(str(e))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
