"""Progress on stderr: which part is running and how many of its rounds are done. A bar on a
terminal (tqdm); nothing at all when stderr is not one (a log, CI)."""

from __future__ import annotations

import sys
from typing import Any


class Progress:
    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._bar: Any = None

    def start(self, part: str, rounds: int) -> None:
        self.done()
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=rounds, desc=f"bench {part}", unit="round", leave=True,
                             file=sys.stderr, dynamic_ncols=True)

    def tick(self, what: str = "") -> None:
        if self._bar is not None:
            if what:
                self._bar.set_postfix_str(what, refresh=False)
            self._bar.update(1)

    def note(self, what: str) -> None:
        """What the current round is doing (a contender's name), without counting a round."""
        if self._bar is not None:
            self._bar.set_postfix_str(what)

    def done(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
