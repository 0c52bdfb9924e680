"""Configuration: defaults, TOML files (configs/*.toml) and command-line flags.

Every flag has a config key of the same name (dashes become underscores);
flags override the file, the file overrides the defaults. Sink options live in
`[sink.NAME]` tables and are validated by the sink itself.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError

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
    stats: float = 0.0  # seconds between --stats lines on stderr; 0: final only
    queue_capacity: int = 65536  # events; a power of two
    arena_pages: int = 32768  # 4 KiB pages the arena may use
    batch: int = 4096  # events per drain call at most
    spin_us: int = 200  # busy-poll window before sleeping on the doorbell
    pin_dir: str = "/sys/fs/bpf/arena-pipeline"
    verbose: bool = False
    sink_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def validate(self) -> Config:
        if self.trigger not in TRIGGERS:
            raise ConfigError(f"trigger must be one of {', '.join(TRIGGERS)}, not {self.trigger!r}")
        if not self.sinks:
            raise ConfigError("no sink given: use --sink stdout|jsonl|socket (or sinks = [...])")
        if self.duration < 0:
            raise ConfigError(f"duration must be >= 0 seconds, not {self.duration}")
        if self.max_events < 0:
            raise ConfigError(f"max_events must be >= 0, not {self.max_events}")
        if len(self.filter_comm.encode()) > 15:
            raise ConfigError(f"filter_comm {self.filter_comm!r} is longer than 15 bytes, "
                              "the kernel's comm length")
        if self.trigger == "getppid" and not self.filter_pid:
            raise ConfigError("trigger getppid (a benchmark load) needs --filter-pid")
        if not 0 <= self.filter_pid < 2**31:
            raise ConfigError(f"filter_pid must be a process id, not {self.filter_pid}")
        cap = self.queue_capacity
        if cap < 2 or cap & (cap - 1) or cap > 1 << 22:
            raise ConfigError(f"queue_capacity must be a power of two from 2 to 4194304, not {cap}")
        if not 64 <= self.arena_pages <= 1 << 20:
            raise ConfigError(f"arena_pages must be from 64 to 1048576, not {self.arena_pages}")
        if not 1 <= self.batch <= 65536:
            raise ConfigError(f"batch must be from 1 to 65536 events, not {self.batch}")
        if not 0 <= self.spin_us <= 1_000_000:
            raise ConfigError(f"spin_us must be from 0 to 1000000, not {self.spin_us}")
        if self.stats < 0:
            raise ConfigError(f"stats interval must be >= 0 seconds, not {self.stats}")
        return self


# Keys a TOML file may set at the top level, with the types they accept
# (annotations are strings here: `from __future__ import annotations`).
_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "float": (int, float), "bool": (bool,),
}
_SCALAR_KEYS: dict[str, tuple[type, ...]] = {
    f.name: _TYPES[str(f.type)] for f in fields(Config) if f.name not in ("sinks", "sink_options")
}


def _check_type(key: str, value: Any, types: tuple[type, ...], where: str) -> None:
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        want = " or ".join(t.__name__ for t in types)
        raise ConfigError(f"{where}: {key} must be {want}, not {type(value).__name__} "
                          f"({value!r})")


def load_file(path: str | Path, cfg: Config) -> Config:
    """Apply a TOML file onto cfg; unknown keys and bad types are errors."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {p}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {p} is not valid TOML: {e}") from None
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
        elif key in _SCALAR_KEYS:
            _check_type(key, value, _SCALAR_KEYS[key], str(p))
            setattr(cfg, key, value)
        else:
            known = ", ".join(sorted([*_SCALAR_KEYS, "sinks", "sink"]))
            raise ConfigError(f"{p}: unknown key {key!r}; known keys: {known}")
    return cfg
