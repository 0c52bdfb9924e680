"""Configuration: defaults, TOML files (configs/*.toml) and command-line flags.

Every flag has a config key of the same name (dashes become underscores);
flags override the file, the file overrides the defaults. Sink options live in
`[sink.NAME]` tables and are validated by the sink itself.
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .ranges import PIPELINE

TRIGGERS = ("auto", "lsm", "tracepoint", "none", "getppid")


@dataclass
class Config:
    trigger: str = "auto"
    sinks: list[str] = field(default_factory=lambda: ["stdout"])
    duration: float = 0.0  # seconds; 0 runs until SIGINT/SIGTERM
    max_events: int = 0  # 0: no limit
    filter_comm: str = ""
    filter_pid: int = 0
    ignore_self: bool = True  # never report the pipeline's own file creations
    process_table: bool = False  # keep the process table in the arena (include/proc.h)
    ancestors: int = 0  # levels of ancestors each event lists from the table; 0: no context
    stats: float = 0.0  # seconds between --stats lines on stderr; 0: final only
    queue_capacity: int = 65536  # events; a power of two
    arena_pages: int = 32768  # 4 KiB pages the arena may use
    batch: int = 4096  # events per drain call at most
    spin_us: int = 200  # busy-poll window before sleeping on the doorbell
    nap_us: int = 1000  # wait between drains of a steady trickle; 0: no naps
    pin_dir: str = "/sys/fs/bpf/arena-pipeline"
    verbose: bool = False
    metrics: str = ""  # HOST:PORT of the Prometheus endpoint; "": none
    metrics_bpf_stats: bool = False  # turn the kernel's BPF run-time statistics on
    metrics_linger: float = 0.0  # seconds the endpoint serves the final figures after the run
    sink_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # filters judged in the kernel and changed on SIGHUP (pipeline/filters.py)
    include_paths: list[str] = field(default_factory=list)
    exclude_paths: list[str] = field(default_factory=list)
    uids: list[int | str] = field(default_factory=list)
    cgroups: list[str] = field(default_factory=list)

    def validate(self) -> Config:
        """Return self if every value is usable, else raise ConfigError naming the key."""
        if self.trigger not in TRIGGERS:
            raise ConfigError(f"trigger must be one of {', '.join(TRIGGERS)}, "
                              f"not {shown(self.trigger)}")
        if not self.sinks:
            raise ConfigError("no sink given: use --sink stdout|jsonl|socket (or sinks = [...])")
        for name in self.sinks:
            _check_text("sink", name)
        for key, rng in PIPELINE.items():
            value = getattr(self, key)
            problem = rng(value)
            if problem is not None:
                flag = "--" + key.replace("_", "-")
                raise ConfigError(f"{key} {problem}, not {shown(value)}; fix {flag} or {key} in "
                                  "the config file")
        _check_text("filter_comm", self.filter_comm)
        if self.ancestors and not self.process_table:
            raise ConfigError("ancestors needs the process table: add --process-table (or "
                              "process_table = true), or leave ancestors at 0")
        if len(self.filter_comm.encode()) > 15:
            raise ConfigError(f"filter_comm {shown(self.filter_comm)} is longer than 15 bytes, "
                              "the kernel's comm length")
        _check_text("pin_dir", self.pin_dir)
        _check_text("metrics", self.metrics)
        if self.metrics:
            from .metrics_http import parse_listen

            parse_listen(self.metrics)
        elif self.metrics_bpf_stats or self.metrics_linger:
            raise ConfigError("metrics_bpf_stats and metrics_linger need a metrics endpoint: "
                              "give --metrics HOST:PORT (or metrics = ...) too")
        from .filters import validate as validate_filters

        validate_filters(self)
        if self.trigger == "getppid" and not self.filter_pid:
            raise ConfigError("trigger getppid (a benchmark load) needs --filter-pid")
        return self


def shown(value: Any, limit: int = 60) -> str:
    """repr() of a value for an error line, cut short: a line, not a dump."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _check_text(key: str, value: str) -> None:
    """Strings go to C and to the file system: no NUL, nothing UTF-8 cannot encode
    (a command line that is not UTF-8 arrives as lone surrogates)."""
    if "\0" in value:
        raise ConfigError(f"{key} must not contain a NUL character, not {shown(value)}")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ConfigError(f"{key} must be valid UTF-8 text, not {shown(value)}") from None


# Keys a TOML file may set at the top level, with the types they accept
# (annotations are strings here: `from __future__ import annotations`).
_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "float": (int, float), "bool": (bool,),
}
_LIST_KEYS = ("include_paths", "exclude_paths", "uids", "cgroups")
_SCALAR_KEYS: dict[str, tuple[type, ...]] = {
    f.name: _TYPES[str(f.type)] for f in fields(Config)
    if f.name not in ("sinks", "sink_options", *_LIST_KEYS)
}


def _check_type(key: str, value: Any, types: tuple[type, ...], where: str) -> None:
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        want = " or ".join(t.__name__ for t in types)
        raise ConfigError(f"{where}: {key} must be {want}, not {type(value).__name__} "
                          f"({shown(value)})")


MAX_CONFIG_BYTES = 1 << 20


def read_toml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """A TOML file as a dict, or ConfigError with one line: missing, unreadable, not
    a regular file (a FIFO or a device would block or never end), too large, not
    UTF-8 (with the offset of the first bad byte), or not TOML."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(f"{what} {p} does not exist") from None
    except OSError as e:
        raise ConfigError(f"cannot read {what} {p}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{what} {p} is not a regular file; give the path of a .toml file")
        if st.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{what} {p} is larger than {MAX_CONFIG_BYTES} bytes; "
                              "a config is a few lines of TOML")
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"cannot read {what} {p}: {e.strerror}") from None
    finally:
        os.close(fd)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{what} {p} is not UTF-8: byte 0x{raw[e.start]:02x} at byte offset "
                          f"{e.start} cannot be decoded; save the file as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{what} {p} is not valid TOML: {e}") from None


def load_file(path: str | Path, cfg: Config) -> Config:
    """Apply a TOML file onto cfg; unknown keys and bad types are errors."""
    p = Path(path)
    data = read_toml(p)
    for key, value in data.items():
        if key == "sinks":
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{p}: sinks must be a list of sink names")
            cfg.sinks = list(value)
        elif key == "sink":
            if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
                raise ConfigError(f"{p}: [sink.NAME] tables hold each sink's options")
            for name, opts in value.items():
                cfg.sink_options.setdefault(name, {}).update(opts)
        elif key in _LIST_KEYS:
            if not isinstance(value, list):
                raise ConfigError(f"{p}: {key} must be an array, not {type(value).__name__} "
                                  f"({shown(value)})")
            setattr(cfg, key, list(value))
        elif key in _SCALAR_KEYS:
            _check_type(key, value, _SCALAR_KEYS[key], str(p))
            setattr(cfg, key, value)
        else:
            known = ", ".join(sorted([*_SCALAR_KEYS, *_LIST_KEYS, "sinks", "sink"]))
            raise ConfigError(f"{p}: unknown key {shown(key)}; known keys: {known}")
    return cfg
