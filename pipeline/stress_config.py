"""The stress run's settings: every one is a flag and a key of the config file's
[stress] table (dashes become underscores), checked before anything starts.

Flags override the file, the file overrides the defaults; a table [stress.NAME]
overrides [stress] for structure NAME only, so one file can hold settings for
every structure (configs/stress-smoke.toml). A bad value is a ConfigError: one
line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, fields
from typing import Any

from .config import read_toml, shown
from .ds import Meta, Model, meta_of, registry
from .errors import ConfigError
from .pins import DEFAULT_ROOT
from .ranges import STRESS, STRESS_MIX_WEIGHT

#: keyed workloads: (insert, delete, search) weights
WORKLOADS: dict[str, tuple[int, int, int]] = {
    "insert-only": (100, 0, 0),
    "read-mostly": (5, 5, 90),
    "mixed": (25, 25, 50),
    "delete-heavy": (20, 70, 10),
}
#: the one workload of queues and stacks
PRODUCE_CONSUME = "produce-consume"
FORMATS = ("table", "json")


@dataclass
class StressConfig:
    structure: str = ""
    workers: int = 2            # keyed: user worker processes; queues: producer processes
    threads: int = 1            # threads per worker process
    kernel_threads: int = 1     # keyed: kernel agents; queues: kernel producers
    consumers: int = 1          # queues: consumer processes
    kernel_consumers: int = 0   # queues: kernel consumer threads
    operations: int = 0         # per thread (keyed: ops; producers: values); 0: duration only
    duration: float = 2.0
    workload: str = ""          # "" : mixed for keyed structures, produce-consume for queues
    keys: int = 65536
    distribution: str = "uniform"
    prefill: float = 0.5        # keyed: share of the keys inserted before the run
    seed: int = 1
    verify: bool = False
    check_linearizability: bool = False
    history: str = ""
    history_limit: int = 1_000_000
    capacity: int = 0
    pages: int = 65536
    batch: int = 4096
    format: str = "table"
    json: str = ""
    pin_dir: str = DEFAULT_ROOT
    kill_worker: int = 0

    @property
    def meta(self) -> Meta:
        return meta_of(self.structure)

    def mix(self) -> tuple[int, int, int]:
        """(insert, delete, search) weights of a keyed workload."""
        return parse_workload(self.workload or "mixed")

    def theta(self) -> float:
        return parse_distribution(self.distribution)


KEYS = [f.name for f in fields(StressConfig)]
_BOOLS = {"verify", "check_linearizability"}
_STRINGS = {"structure", "workload", "distribution", "history", "format", "json", "pin_dir"}


def parse_workload(text: str) -> tuple[int, int, int]:
    """A keyed workload's weights: a name of WORKLOADS or insert=I,search=S,delete=D."""
    if text in WORKLOADS:
        return WORKLOADS[text]
    if "=" not in text:
        raise ValueError(f"unknown workload {text!r}: use {', '.join(WORKLOADS)}, "
                         f"{PRODUCE_CONSUME} (queues and stacks) or insert=50,search=40,delete=10")
    w = {"insert": 0, "delete": 0, "search": 0}
    for part in text.split(","):
        name, _, num = part.strip().partition("=")
        if name not in w or not re.fullmatch(r"\d{1,7}", num.strip()):
            raise ValueError(f"bad workload part {part.strip()!r}: use insert=N,search=N,delete=N "
                             f"with N {STRESS_MIX_WEIGHT.describe()}")
        n = int(num)
        problem = STRESS_MIX_WEIGHT(n)
        if problem is not None:
            raise ValueError(f"workload weight {name} {problem}, not {n}")
        w[name] = n
    if not any(w.values()):
        raise ValueError("workload weights must not all be zero")
    return w["insert"], w["delete"], w["search"]


def parse_distribution(text: str) -> float:
    """0.0 for uniform, theta for zipf:THETA (0 < theta < 1)."""
    if text == "uniform":
        return 0.0
    m = re.fullmatch(r"zipf:([0-9.]+)", text)
    if m:
        try:
            theta = float(m.group(1))
        except ValueError:
            theta = -1.0
        if 0 < theta < 1:
            return theta
    raise ValueError(f"unknown distribution {text!r}: use uniform or zipf:THETA with "
                     "0 < THETA < 1 (e.g. zipf:0.99)")


def _flag_range(name: str) -> Any:
    return STRESS[name].flag()


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The stress command's flags; each has the config key of the same name."""
    names = ", ".join(m.name for m in registry())
    p.add_argument("structure", nargs="?", metavar="STRUCTURE",
                   help=f"the structure to stress ({names}); or the config's structure key")
    p.add_argument("--config", metavar="PATH", help="TOML file with a [stress] table of these keys")
    g = p.add_argument_group("agents")
    g.add_argument("-t", "--workers", type=_flag_range("workers"), metavar="N",
                   help="user worker processes (queues: producers); "
                        f"{STRESS['workers'].describe()}; default 2")
    g.add_argument("--threads", type=_flag_range("threads"), metavar="N",
                   help=f"threads per worker process; {STRESS['threads'].describe()}; default 1")
    g.add_argument("-k", "--kernel-threads", type=_flag_range("kernel_threads"), metavar="N",
                   help="kernel threads running ds_run_NAME (queues: producers); "
                        f"{STRESS['kernel_threads'].describe()}; default 1")
    g.add_argument("--consumers", type=_flag_range("consumers"), metavar="N",
                   help="queues: consumer processes; "
                        f"{STRESS['consumers'].describe()}; default 1")
    g.add_argument("--kernel-consumers", type=_flag_range("kernel_consumers"), metavar="N",
                   help="queues: kernel consumer threads; "
                        f"{STRESS['kernel_consumers'].describe()}; default 0")
    g = p.add_argument_group("work")
    g.add_argument("-o", "--operations", "--ops", type=_flag_range("operations"), metavar="N",
                   help="per thread: operations (keyed) or values pushed (producers); "
                        f"0: until --duration; {STRESS['operations'].describe()}")
    g.add_argument("--duration", type=_flag_range("duration"), metavar="S",
                   help=f"seconds at most; {STRESS['duration'].describe()}; default 2")
    g.add_argument("-w", "--workload", metavar="W",
                   help=f"{', '.join(WORKLOADS)}, insert=I,search=S,delete=D (keyed); "
                        f"{PRODUCE_CONSUME} (queues and stacks)")
    g.add_argument("--keys", type=_flag_range("keys"), metavar="N",
                   help=f"keyed: the key space 1..N; {STRESS['keys'].describe()}; default 65536")
    g.add_argument("--distribution", metavar="D", help="uniform (default) or zipf:THETA")
    g.add_argument("--prefill", type=_flag_range("prefill"), metavar="F",
                   help="keyed: share of the keys inserted before the run; "
                        f"{STRESS['prefill'].describe()}; default 0.5")
    g.add_argument("--seed", type=_flag_range("seed"), metavar="N",
                   help=f"seed of every agent's operations; {STRESS['seed'].describe()}")
    g = p.add_argument_group("checking")
    g.add_argument("-v", "--verify", action="store_true", default=None,
                   help="verify the structure and every agent's effects at the end")
    g.add_argument("--check-linearizability", action="store_true", default=None,
                   help="record a timestamped history and check it for linearizability")
    g.add_argument("--history", metavar="PATH", help="write the recorded history there")
    g.add_argument("--history-limit", type=_flag_range("history_limit"), metavar="N",
                   help="records per thread; a thread whose buffer is full stops; "
                        f"{STRESS['history_limit'].describe()}")
    g.add_argument("--kill-worker", type=_flag_range("kill_worker"), metavar="N",
                   help="fault injection: SIGKILL worker N (1-based) halfway through the run")
    g = p.add_argument_group("arena")
    g.add_argument("--capacity", type=_flag_range("capacity"), metavar="N",
                   help=f"buckets or slots, 0: the default; {STRESS['capacity'].describe()}")
    g.add_argument("--pages", type=_flag_range("pages"), metavar="N",
                   help=f"arena size; {STRESS['pages'].describe()}; default 65536")
    g.add_argument("--batch", type=_flag_range("batch"), metavar="N",
                   help=f"operations per kernel call; {STRESS['batch'].describe()}")
    g.add_argument("--pin-dir", metavar="DIR",
                   help="bpffs directory; the run pins its arena in DIR/<pid> for its workers")
    g = p.add_argument_group("output")
    g.add_argument("--format", choices=FORMATS, help="stdout: a table (default) or JSON")
    g.add_argument("--json", metavar="PATH", help="also write the JSON result to PATH")


def _from_file(path: str, structure: str | None) -> tuple[dict[str, Any], str | None]:
    raw = read_toml(path, "stress config")
    t = raw.get("stress")
    if not isinstance(t, dict):
        raise ConfigError(f"{path}: needs a [stress] table")
    extra = set(raw) - {"stress"}
    if extra:
        raise ConfigError(f"{path}: unknown table {shown(sorted(extra)[0])} (only [stress])")
    names = {m.name for m in registry()}
    base = {k: v for k, v in t.items() if not (k in names and isinstance(v, dict))}
    name = structure or base.get("structure")
    if isinstance(name, str) and isinstance(t.get(name), dict):
        base.update(t[name])
    return base, name if isinstance(name, str) else None


def _check_type(where: str, key: str, v: Any) -> Any:
    if key not in KEYS:
        raise ConfigError(f"{where}: unknown key {shown(key)} (known: {', '.join(KEYS)})")
    if key in _BOOLS:
        if not isinstance(v, bool):
            raise ConfigError(f"{where}: stress.{key} must be true or false, not {shown(v)}")
        return v
    if key in _STRINGS:
        if not isinstance(v, str):
            raise ConfigError(f"{where}: stress.{key} must be a string, not {shown(v)}")
        return v
    problem = STRESS[key](v)
    if problem is not None:
        raise ConfigError(f"{where}: stress.{key} {problem}, not {shown(v)}")
    return float(v) if STRESS[key].kind is float else v


def load(args: argparse.Namespace) -> StressConfig:
    """Defaults, then the file, then the flags; checked."""
    values: dict[str, Any] = {}
    if args.config:
        file_vals, _ = _from_file(args.config, args.structure)
        for k, v in file_vals.items():
            values[k] = _check_type(args.config, k, v)
    for k in KEYS:
        v = getattr(args, k, None)
        if v is not None:
            values[k] = _check_type("stress", k, v)
    cfg = StressConfig(**values)
    check(cfg, args.config or "stress")
    return cfg


def check(c: StressConfig, where: str) -> None:
    """What one value alone cannot say: the structure, the workload, the agents."""
    def bad(msg: str) -> ConfigError:
        return ConfigError(f"{where}: {msg}")

    if not c.structure:
        raise bad("name a structure: python -m pipeline stress STRUCTURE "
                  f"({', '.join(m.name for m in registry())}), or stress.structure")
    try:
        m = meta_of(c.structure)
    except KeyError as e:
        raise bad(e.args[0]) from None
    try:
        c.theta()
        if m.keyed:
            if c.workload == PRODUCE_CONSUME:
                raise ValueError(f"{PRODUCE_CONSUME} is for queues and stacks; "
                                 f"{m.name} is keyed: use {', '.join(WORKLOADS)} or custom weights")
            c.mix()
        elif c.workload not in ("", PRODUCE_CONSUME):
            raise ValueError(f"{m.name} is a queue or stack: its workload is {PRODUCE_CONSUME}")
    except ValueError as e:
        raise bad(str(e)) from None
    if c.format not in FORMATS:
        raise bad(f"stress.format must be one of {', '.join(FORMATS)}, not {shown(c.format)}")
    if m.keyed:
        if c.workers + c.kernel_threads == 0:
            raise bad("needs at least one user worker or kernel thread (-t or -k)")
        if c.kill_worker > c.workers:
            raise bad(f"kill_worker {c.kill_worker} names no worker (there are {c.workers})")
        return
    producers = c.workers * c.threads + c.kernel_threads
    consumers = c.consumers * c.threads + c.kernel_consumers
    if c.kill_worker > c.workers + c.consumers:
        raise bad(f"kill_worker {c.kill_worker} names no worker "
                  f"(there are {c.workers + c.consumers})")
    if producers == 0:
        raise bad(f"{m.name} is a queue: needs a producer (-t workers or -k kernel threads)")
    if consumers == 0:
        raise bad(f"{m.name} is a queue: needs consumers or kernel_consumers")
    if m.model == Model.SPSC and (producers != 1 or consumers != 1):
        raise bad(f"{m.name} is SPSC: exactly one producer and one consumer in all "
                  f"(here {producers} and {consumers}; threads count per process)")
    if m.model == Model.MPSC and consumers != 1:
        raise bad(f"{m.name} is MPSC: exactly one consumer in all (here {consumers})")
