"""argparse for every command of the package, with the project's rule for bad
input: one line on stderr naming the flag, what is wrong and where to look,
exit 2. argparse's own error() prints a usage block first; here the error
becomes a ConfigError, which the entry point prints as that one line."""

from __future__ import annotations

import argparse
from typing import NoReturn

from .errors import ConfigError


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message}; see {self.prog} --help")
