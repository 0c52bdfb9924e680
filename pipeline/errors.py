"""Errors meant for people: one line saying what is wrong and what to do."""

from __future__ import annotations

# Exit status for bad input: privileges, kernel features, config, sinks.
EXIT_BAD_INPUT = 2


class PipelineError(Exception):
    """Stops the pipeline before it captures anything; str() is one line for people."""


class ConfigError(PipelineError):
    """A bad config key, value or flag."""


class PrivilegeError(PipelineError):
    """Not root and without the capabilities BPF needs."""


class KernelError(PipelineError):
    """The kernel lacks something the pipeline needs (BPF, the arena, BPF LSM)."""
