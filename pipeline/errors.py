"""Errors meant for people: one line saying what is wrong and what to do."""

from __future__ import annotations

# Exit statuses (README, "Exit status"). 0: stopped as asked (a signal, --duration,
# --max-events), or every sink's reader went away (a closed pipe on stdout).
EXIT_OK = 0
# Every sink failed for good for another reason (a full disk, a write error): the run ended
# itself without anywhere left to deliver, which a service manager should see as a failure.
EXIT_SINKS_FAILED = 1
# Bad input, found before anything was captured: privileges, kernel features, config, sinks,
# closed standard descriptors.
EXIT_BAD_INPUT = 2


class PipelineError(Exception):
    """Stops the pipeline before it captures anything; str() is one line for people."""


class ConfigError(PipelineError):
    """A bad config key, value or flag."""


class PrivilegeError(PipelineError):
    """Not root and without the capabilities BPF needs."""


class KernelError(PipelineError):
    """The kernel lacks something the pipeline needs (BPF, the arena, BPF LSM)."""
