"""Expected failures and how a command reports them.

A user's mistake (a missing folder, a day the table does not hold, a server that does not answer)
raises InputError with a message that names the problem and what to do. `run_command` prints it as
one line on stderr and exits with EXIT_INPUT_ERROR; `--debug` shows the trace instead. Anything
else is a bug and keeps its trace. Imports nothing heavy: every layer (Triton models too) uses it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

EXIT_INPUT_ERROR = 2
DEBUG_FLAG = "--debug"
LOG_FILE_ENV = "SPARKREC_LOG_FILE"


class InputError(Exception):
    """A failure the user can fix from its one-line message alone."""


class CommandParser(argparse.ArgumentParser):
    """argparse whose errors (a missing option, a bad value) are InputErrors: one line, not usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise InputError(f"{message} (see {self.prog} --help)")


def run_command(main: Callable[[list[str]], Any], prog: str, argv: list[str] | None = None) -> None:
    """Runs a command's main on argv (less `--debug`); an InputError ends it with one line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv
    try:
        main([a for a in argv if a != DEBUG_FLAG])
    except InputError as error:
        if debug:
            raise
        log = os.environ.get(LOG_FILE_ENV)
        where = f" (log: {log})" if log and os.path.isfile(log) else ""
        print(f"{prog}: error: {error}{where}", file=sys.stderr, flush=True)
        sys.exit(EXIT_INPUT_ERROR)
