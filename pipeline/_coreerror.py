"""CoreError, the one exception type of the C extension modules (pipeline._core,
pipeline._ds, pipeline.bench._native): each exports this class as CoreError. It is
defined here, in Python, because the modules share no C state and a failure in any of
them must be caught by the same `except`."""

from __future__ import annotations


class CoreError(OSError):
    """A failure in the C extension: args are (errno, one-line message)."""
