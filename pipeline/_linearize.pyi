"""Types of pipeline._linearize, the linearizability checker's C core (pipeline/_lin/)."""

from typing import Any

RECORD_SIZE: int
IDX_MAX: int

def check_keyed(records: Any, ignore_values: bool = False, initial: Any = None,
                budget: int = 0) -> dict[str, Any]: ...
def check_seq(records: Any, lifo: bool = False, budget: int = 0) -> dict[str, Any]: ...
