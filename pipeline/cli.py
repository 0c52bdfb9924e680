"""Command line: `arena-pipeline [run] [flags]` runs the pipeline (run is the default
command); `arena-pipeline COMMAND --help` for the tools around it.

Each command is an argparse subparser. Only the command being run gets its flags added
(its module imported): `bench` or `stress` code is never loaded to run the pipeline, and
the top-level help needs only each command's one line.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import log
from .errors import EXIT_BAD_INPUT, EXIT_OK, ConfigError, PipelineError
from .flags import Parser
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
    "run": Command("run the pipeline (the default command; its flags are below)",
                   ".run_cmd"),
    "burst": Command("produce N events in the kernel into a running pipeline's queue",
                     ".burst"),
    "ds": Command("list the data structures registered in the arena", ".ds_cli"),
    "stress": Command("user processes and kernel programs on one arena structure at once, "
                      "checked exactly", ".stress"),
    "bench": Command("the benchmark: every performance figure, side by side",
                     ".bench.cli"),
    "consume": Command("read the nats sink's stream back as JSON lines on stdout", ".consume"),
    "linearize": Command("check a recorded history for linearizability", ".linearize_cmd"),
    "ps": Command("print a running pipeline's process table, read from its arena", ".ps_cmd"),
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


# -- flags every command takes ----------------------------------------------------------

def add_diagnostics(p: argparse.ArgumentParser) -> None:
    """-v/-q, for every command (README: Logging)."""
    g = p.add_argument_group("diagnostics")
    m = g.add_mutually_exclusive_group()
    # a command may take -v for itself (stress: --verify); --verbose stays
    verbose = [o for o in ("-v", "--verbose") if o not in p._option_string_actions]
    m.add_argument(*verbose, action="store_true", default=None,
                   help="debug output, including libbpf's (config key verbose)")
    m.add_argument("-q", "--quiet", action="store_true",
                   help="warnings and errors only; a run's statistics are still printed")


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
