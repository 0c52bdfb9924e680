"""The run command: the pipeline's flags (grouped as --help shows them), the
configuration they make together with the config file, and the run itself."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from . import log
from .config import TRIGGERS, Config, load_file
from .errors import ConfigError
from .kernel import check_privileges
from .ranges import PIPELINE
from .sinks.base import SinkError


def _number(g: argparse._ArgumentGroup, flag: str, metavar: str, text: str,
            **kw: Any) -> None:
    """A numeric flag whose type and range are its config key's."""
    rng = PIPELINE[flag[2:].replace("-", "_")]
    g.add_argument(flag, type=rng.flag(), metavar=metavar,
                   help=f"{text}; {rng.describe()}", **kw)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The run command's flags, grouped; sinks add their own to the sinks group."""
    p.add_argument("--config", metavar="PATH",
                   help="TOML config (configs/*.toml); flags override it")
    cap = p.add_argument_group("capture")
    cap.add_argument("--trigger", choices=TRIGGERS,
                     help="file-creation producer: lsm.s/inode_create where it attaches, else "
                          "syscall tracepoints (auto, the default); none attaches nothing; "
                          "getppid is the benchmark's load (needs --filter-pid)")
    cap.add_argument("--filter-comm", metavar="COMM",
                     help="only tasks with this comm (in kernel)")
    _number(cap, "--filter-pid", "PID", "only this process (in kernel; 0: every process)")
    cap.add_argument("--no-ignore-self", dest="ignore_self", action="store_false",
                     default=None, help="also report files the pipeline itself creates")
    cap.add_argument("--process-table", action="store_true", default=None,
                     help="keep a table of every task in the arena (scheduler tracepoints, "
                          "seeded from /proc); `ps` prints it")
    _number(cap, "--ancestors", "N", "with --process-table: each event says whether the table "
            "knows its task, its parent's comm, and its ancestors up to N levels (0: none of it)")
    cap.add_argument("--include-path", action="append", metavar="PREFIX", dest="include_paths",
                     help="only files under this absolute path (in kernel; repeatable; "
                          "changed on SIGHUP from the config file unless given here)")
    cap.add_argument("--exclude-path", action="append", metavar="PREFIX", dest="exclude_paths",
                     help="no file under this absolute path (in kernel; repeatable)")
    cap.add_argument("--uid", action="append", metavar="UID", dest="uids",
                     help="only files created by this uid or user name (in kernel; repeatable)")
    cap.add_argument("--cgroup", action="append", metavar="PATH", dest="cgroups",
                     help="only tasks in this cgroup v2 directory or below it (in kernel; "
                          "repeatable)")
    _number(cap, "--duration", "SECONDS", "stop after this long (0: run until a signal)")
    _number(cap, "--max-events", "N", "stop after N events (0: no limit)")
    sinks = p.add_argument_group("sinks", "every event goes to every sink; a sink's own "
                                 "flags set its [sink.NAME] options")
    sinks.add_argument("--sink", action="append", metavar="NAME",
                       help="stdout (the default), jsonl, socket or a plugin; repeat or "
                            "comma-separate for several")
    p.set_defaults(sink_flags=_add_sink_flags(sinks))
    q = p.add_argument_group("queue", "the arena, its event queue and the reader")
    _number(q, "--queue-capacity", "N", "arena queue size in events")
    _number(q, "--arena-pages", "N", "arena size in 4 KiB pages")
    _number(q, "--batch", "N", "events per drain at most")
    _number(q, "--spin-us", "US", "busy-poll window before sleeping")
    _number(q, "--nap-us", "US", "wait between drains of a steady trickle (0: none)")
    q.add_argument("--pin-dir", metavar="DIR", help="bpffs directory for this run's pins")
    out = p.add_argument_group("output", "what the run prints besides the events")
    _number(out, "--stats", "SECONDS", "print counters to stderr every SECONDS (flag alone: 1)",
            nargs="?", const=1.0)
    out.add_argument("--metrics", metavar="HOST:PORT",
                     help="serve the counters for Prometheus at http://HOST:PORT/metrics, and "
                          "/healthz; HOST:PORT or [IPV6]:PORT, e.g. 127.0.0.1:9464 (0.0.0.0: "
                          "every interface)")
    out.add_argument("--metrics-bpf-stats", action="store_true", default=None,
                     help="turn the kernel's BPF run-time statistics on while the run lasts")
    _number(out, "--metrics-linger", "SECONDS",
            "after the run, serve the final figures this long (0: not at all)")
    out.add_argument("--check-config", action="store_true",
                     help="check the flags, the config file and every sink's options, print "
                          "the resulting configuration as JSON on stdout and exit; loads "
                          "nothing")


def _add_sink_flags(group: argparse._ArgumentGroup) -> dict[str, tuple[str, str]]:
    """Each sink class's own flags (Sink.add_arguments); returns {dest: (sink, option)}."""
    from .sinks.registry import flag_providers

    flags: dict[str, tuple[str, str]] = {}
    for cls in flag_providers():
        try:
            mapping = cls.add_arguments(group)
        except argparse.ArgumentError as e:
            raise SinkError(f"sink {cls.name}: its command-line flags clash with others "
                            f"({e}); fix the plugin") from None
        flags.update({dest: (cls.name, opt) for dest, opt in mapping.items()})
    return flags


def make_config(args: argparse.Namespace) -> Config:
    cfg = Config()
    if args.config:
        load_file(args.config, cfg)
    for key in ("trigger", "duration", "max_events", "filter_comm", "filter_pid", "ignore_self",
                "stats", "queue_capacity", "arena_pages", "batch", "spin_us", "nap_us",
                "pin_dir",
                "verbose", "metrics", "metrics_bpf_stats", "metrics_linger", "process_table",
                "ancestors"):
        value = getattr(args, key)
        if value is not None:
            setattr(cfg, key, value)
    for key in ("include_paths", "exclude_paths", "uids", "cgroups"):
        if getattr(args, key, None):
            setattr(cfg, key, list(getattr(args, key)))
    if args.sink:
        cfg.sinks = [n.strip() for s in args.sink for n in s.split(",") if n.strip()]
    sink_flags: dict[str, tuple[str, str]] = args.sink_flags
    for dest, (sink, opt) in sink_flags.items():
        value = getattr(args, dest, None)
        if value is not None:
            cfg.sink_options.setdefault(sink, {})[opt] = value
    cfg.validate()
    if ("stdout" in cfg.sinks and "jsonl" in cfg.sinks
            and cfg.sink_options.get("jsonl", {}).get("output") == "-"):
        # two writers on fd 1 would interleave their batches into one stream of duplicates
        raise ConfigError('the stdout sink and the jsonl sink with output "-" would both '
                          "write to standard output; drop one of them")
    return cfg


def check_sink_options(cfg: Config) -> dict[str, dict[str, Any]]:
    """Every sink named exists and every [sink.NAME] table is valid, in use or not
    (a typo in an unused table is still a typo); returns each one's options with
    the defaults filled in, or raises SinkError."""
    from .sinks.registry import get_sink_class

    return {name: get_sink_class(name).validate_options(cfg.sink_options.get(name, {}))
            for name in (*cfg.sinks, *cfg.sink_options)}


SECRET_SHOWN = "(set; not shown)"


def hide_secrets(options: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each sink's options with its credentials (Option.secret) replaced by a mark, so
    that a configuration printed or logged holds no password or token."""
    from .sinks.registry import get_sink_class

    out: dict[str, dict[str, Any]] = {}
    for name, opts in options.items():
        try:
            decl = get_sink_class(name).options
        except SinkError:
            decl = {}
        out[name] = {k: (SECRET_SHOWN if k in decl and decl[k].secret and v else v)
                     for k, v in opts.items()}
    return out


def main(args: argparse.Namespace) -> int:
    cfg = make_config(args)
    if args.check_config:
        effective = {**dataclasses.asdict(cfg),
                     "sink_options": hide_secrets(check_sink_options(cfg))}
        sys.stdout.write(json.dumps(effective, default=str) + "\n")
        return 0
    if cfg.verbose and not args.quiet:  # `verbose = true` in the config file is -v
        log.setup(log.VERBOSE)
    shown = {**dataclasses.asdict(cfg), "sink_options": hide_secrets(cfg.sink_options)}
    log.get(__name__).debug("configuration %s", json.dumps(shown, default=str))
    # before anything heavier is imported: the commonest mistake gets the
    # quickest, clearest answer
    check_privileges(cfg.trigger, cfg.pin_dir)
    from .run import run_pipeline

    fixed = {k: getattr(cfg, k) for k in ("include_paths", "exclude_paths", "uids", "cgroups")
             if getattr(args, k, None)}
    return run_pipeline(cfg, config_path=args.config, fixed_filters=fixed)
