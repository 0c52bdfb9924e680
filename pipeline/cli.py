"""Command line: `arena-pipeline [run] [flags]` runs the pipeline (run is the default
command); `arena-pipeline COMMAND --help` for the tools around it.

Each command is an argparse subparser. Only the command being run gets its flags added
(its module imported): `bench` or `stress` code is never loaded to run the pipeline, and
the top-level help needs only each command's one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import log
from .config import TRIGGERS, Config, load_file
from .errors import EXIT_BAD_INPUT, EXIT_OK, ConfigError, PipelineError
from .flags import Parser
from .kernel import check_privileges
from .ranges import PIPELINE
from .sinks.base import SinkError
from .stdio import check_stdio, to_devnull
from .version import version

DESCRIPTION = ("File-creation events from the kernel, through a queue in a BPF arena, to "
               "sinks (stdout, jsonl, socket, plugins). Without a command, runs the pipeline.")


@dataclass(frozen=True)
class Command:
    help: str
    module: str  # "module" whose add_arguments(parser) and main(args) implement it

    def load(self) -> Any:
        return importlib.import_module(self.module, __package__)


COMMANDS: dict[str, Command] = {
    "run": Command("run the pipeline (the default command; its flags are below)", ".cli"),
    "burst": Command("produce N events in the kernel into a running pipeline's queue",
                     ".burst"),
    "ds": Command("list the data structures registered in the arena", ".ds_cli"),
    "stress": Command("user processes and kernel programs on one arena structure at once, "
                      "checked exactly", ".stress"),
    "bench": Command("the benchmark: every performance figure, side by side",
                     ".bench.cli"),
}
DEFAULT_COMMAND = "run"
# Flags of the top-level parser itself; anything else before a command belongs to `run`.
_TOP_FLAGS = ("-h", "--help", "--version")
# Diagnostics flags every command takes; given before the command, they are moved after it.
_DIAG_FLAGS = ("-v", "--verbose", "-q", "--quiet")


def prog_name(argv0: str | None = None) -> str:
    """How the user started us: the console script's name, or `python -m pipeline`."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    base = os.path.basename(argv0)
    if not base or base in ("__main__.py", "-m", "-c") or base.endswith(".py"):
        return "python -m pipeline"
    return base


# -- the run command's flags ----------------------------------------------------------------

def _number(g: argparse._ArgumentGroup, flag: str, metavar: str, text: str,
            **kw: Any) -> None:
    """A numeric flag whose type and range are its config key's."""
    rng = PIPELINE[flag[2:].replace("-", "_")]
    g.add_argument(flag, type=rng.flag(), metavar=metavar,
                   help=f"{text}; {rng.describe()}", **kw)


def add_diagnostics(p: argparse.ArgumentParser) -> None:
    """-v/-q, for every command (README: Logging)."""
    g = p.add_argument_group("diagnostics")
    m = g.add_mutually_exclusive_group()
    m.add_argument("-v", "--verbose", action="store_true", default=None,
                   help="debug output, including libbpf's (config key verbose)")
    m.add_argument("-q", "--quiet", action="store_true",
                   help="warnings and errors only; a run's statistics are still printed")


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
    q.add_argument("--pin-dir", metavar="DIR", help="bpffs directory for this run's pins")
    out = p.add_argument_group("output", "what the run prints besides the events")
    _number(out, "--stats", "SECONDS", "print counters to stderr every SECONDS (flag alone: 1)",
            nargs="?", const=1.0)
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
                "stats", "queue_capacity", "arena_pages", "batch", "spin_us", "pin_dir",
                "verbose"):
        value = getattr(args, key)
        if value is not None:
            setattr(cfg, key, value)
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


def main_run(args: argparse.Namespace) -> int:
    cfg = make_config(args)
    if args.check_config:
        effective = {**dataclasses.asdict(cfg), "sink_options": check_sink_options(cfg)}
        sys.stdout.write(json.dumps(effective, default=str) + "\n")
        return 0
    if cfg.verbose and not args.quiet:  # `verbose = true` in the config file is -v
        log.setup(log.VERBOSE)
    log.get(__name__).debug("configuration %s", json.dumps(dataclasses.asdict(cfg)))
    # before anything heavier is imported: the commonest mistake gets the
    # quickest, clearest answer
    check_privileges(cfg.trigger, cfg.pin_dir)
    from .run import run_pipeline

    return run_pipeline(cfg)


# -- the parser -----------------------------------------------------------------------------

class _Help(argparse.Action):
    """The top-level --help: the commands, one line each, then the default command's flags
    in their groups, so one page shows how to run the pipeline."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        assert isinstance(parser, CommandLine)
        run = parser.command_parser(DEFAULT_COMMAND)
        fmt = run._get_formatter()
        fmt.add_text(f"flags of {run.prog} (also taken without the word run):")
        for group in run._action_groups:
            actions = [a for a in group._group_actions if a.help is not argparse.SUPPRESS
                       and a.dest != "help"]
            if not actions:
                continue
            fmt.start_section(group.title)
            fmt.add_text(group.description)
            fmt.add_arguments(actions)
            fmt.end_section()
        parser._print_message(parser.format_help() + "\n" + fmt.format_help(), sys.stdout)
        parser.exit()


class CommandLine(Parser):
    """The top-level parser. It makes the command explicit before parsing (normalize) and
    gives a command's subparser its flags the first time that command is parsed, so
    `build_parser().parse_args(["--sink", "jsonl"])` parses as `run --sink jsonl`."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.commands: dict[str, argparse.ArgumentParser] = {}
        self._filled: set[str] = set()

    def command_parser(self, name: str) -> argparse.ArgumentParser:
        """`name`'s subparser, with its flags."""
        sp = self.commands[name]
        if name not in self._filled:
            self._filled.add(name)
            if name == DEFAULT_COMMAND:
                add_arguments(sp)
            else:
                COMMANDS[name].load().add_arguments(sp)
            add_diagnostics(sp)
        return sp

    def parse_known_args(  # type: ignore[override]
            self, args: Sequence[str] | None = None,
            namespace: argparse.Namespace | None = None,
    ) -> tuple[argparse.Namespace, list[str]]:
        argv, command = normalize(sys.argv[1:] if args is None else args)
        self.command_parser(command or DEFAULT_COMMAND)  # the top-level help shows run's
        return super().parse_known_args(argv, namespace)


def build_parser(prog: str | None = None) -> CommandLine:
    """The whole command line."""
    prog = prog_name() if prog is None else prog
    p = CommandLine(prog=prog, description=DESCRIPTION, add_help=False,
                    epilog=f"{prog} COMMAND --help shows a command's flags.")
    p.add_argument("-h", "--help", action=_Help, help="show this help and exit")
    p.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = p.add_subparsers(dest="command", title="commands", metavar="COMMAND",
                           parser_class=Parser)
    for name, cmd in COMMANDS.items():
        p.commands[name] = sub.add_parser(name, help=cmd.help, description=cmd.help)
    return p


def normalize(argv: Sequence[str]) -> tuple[list[str], str | None]:
    """argv with the command made explicit, and that command (None for the top-level help
    or --version). `run` is inserted where the first word is not a command; -v/-q given
    before a command are moved after it, where its parser takes them."""
    argv = list(argv)
    i = 0
    diag: list[str] = []
    while i < len(argv) and (argv[i] in _TOP_FLAGS or argv[i] in _DIAG_FLAGS):
        if argv[i] in _DIAG_FLAGS:
            diag.append(argv.pop(i))
        else:
            i += 1
    top = argv[:i]
    rest = argv[i:]
    if rest and rest[0] in COMMANDS:
        return [*top, rest[0], *diag, *rest[1:]], rest[0]
    if not rest and any(a in _TOP_FLAGS for a in top):
        return [*top, *diag], None
    if rest and not rest[0].startswith("-"):
        # run takes no positional argument: a first word is a command or a typo of one
        raise ConfigError(f"unknown command {rest[0]!r}; commands: {', '.join(COMMANDS)} "
                          "(run is the default); see --help")
    return [*top, DEFAULT_COMMAND, *diag, *rest], DEFAULT_COMMAND


def log_level(args: argparse.Namespace) -> int:
    if getattr(args, "quiet", False):
        return log.QUIET
    if getattr(args, "verbose", None):
        return log.VERBOSE
    return log.NORMAL


def dispatch(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    log.setup(log_level(args))
    if args.command == DEFAULT_COMMAND:
        return main_run(args)
    entry: Callable[[argparse.Namespace], int] = COMMANDS[args.command].load().main
    return entry(args)


def one_line(msg: str) -> str:
    """The message as one printable line, whatever a value quoted in it held
    (newlines, terminal escapes, NUL)."""
    flat = " ".join(msg.split())
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in flat)


def main(argv: Sequence[str] | None = None) -> int:
    # First of all, for every command: nothing may be opened while fd 1 or 2 is free.
    bad = check_stdio()
    if bad is not None:
        return bad
    log.setup()
    try:
        return dispatch(sys.argv[1:] if argv is None else argv)
    except (PipelineError, SinkError) as e:
        log.get().error("%s", one_line(str(e)))
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        # A command's reader went away (`ds list | head -n 1`): as for the pipeline's
        # stdout sink, a closed pipe on stdout is a normal end.
        to_devnull(1)
        return EXIT_OK
    except KeyboardInterrupt:
        return 130
