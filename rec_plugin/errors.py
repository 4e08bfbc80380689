"""Expected failures and how a command reports them.

A user's mistake (a missing folder, a day the table does not hold, a server that does not answer)
raises InputError with a message that names the problem and what to do. `run_command` prints it as
one line on stderr and exits with EXIT_INPUT_ERROR; `--debug` shows the trace instead. So does one
raised in a Spark task (a Python worker's trace inside the driver's error names it), and a file that
Spark cannot read (a truncated gzip: the file and the cause, not the Java trace). A Ctrl-C is
one line too (EXIT_INTERRUPTED). Anything else is a bug and keeps its trace. Imports nothing heavy:
every layer (Triton models too) uses it.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any, NoReturn

EXIT_INPUT_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C
DEBUG_FLAG = "--debug"
LOG_FILE_ENV = "SPARKREC_LOG_FILE"


class InputError(Exception):
    """A failure the user can fix from its one-line message alone."""


# How a Python worker's trace, carried in the driver's error (PySpark's PythonException), names an
# InputError that a task raised.
_RAISED_IN_A_TASK = re.compile(rf"^{re.escape(InputError.__module__)}\.InputError: (.+)$", re.MULTILINE)


# A worker's trace in which another exception followed the InputError: a bug, whose trace is kept.
_CHAINED = ("During handling of the above exception", "The above exception was the direct cause")


def first_line(message: str | None, otherwise: str) -> str:
    """A message's first non-blank line (a server's or JVM's answer may carry a trace after it), or
    `otherwise` when it has none: what a one-line error quotes."""
    lines = (message or "").strip().splitlines()
    return lines[0] if lines else otherwise


def raised_in_a_task(error: BaseException) -> InputError | None:
    """The InputError a Spark task raised, as the driver's error carries its worker's trace."""
    text = str(error)
    found = _RAISED_IN_A_TASK.findall(text)
    if not found or any(chained in text for chained in _CHAINED):
        return None
    return InputError(found[-1].strip())


# Spark's error for a file a task could not read, and the causes its Java trace lists, the last being
# the root: those that say the file's bytes are damaged (a gzip cut short, a parquet file that is not
# one). Others (a file gone, a store that did not answer) keep their trace.
_UNREADABLE_FILE = re.compile(r"\[FAILED_READ_FILE[.A-Z_]*\] Encountered error while reading file (\S+?)\.\s")
_CAUSE = re.compile(r"^Caused by: (.+)$", re.MULTILINE)
_DAMAGE = re.compile(
    r"EOFException|ZipException|Not in GZIP format|incorrect header check|invalid (stored )?block"
    r"|is not a Parquet file|ParquetDecodingException|Unexpected end of input"
)


def unreadable_file(error: BaseException) -> InputError | None:
    """The file whose damaged bytes Spark could not read, and why (the root cause of its trace)."""
    text = str(error)
    found = _UNREADABLE_FILE.search(text)
    causes = _CAUSE.findall(text)
    if found is None or not causes or not _DAMAGE.search(causes[-1]):
        return None
    path = urllib.parse.unquote(found.group(1))
    return InputError(f"{path} cannot be read ({causes[-1].strip()}): is it cut short or damaged? Replace it")


class CommandParser(argparse.ArgumentParser):
    """argparse whose errors (a missing option, a bad value) are InputErrors: one line, not usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise InputError(f"{message} (see {self.prog} --help)")


_in_command = threading.Event()
_interrupted = threading.Event()


class _BrokenCallsUnlogged(logging.Filter):
    """py4j logs each call that a Ctrl-C broke (with its trace) on the root logger; the command says
    it was interrupted instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (_interrupted.is_set() and record.name == "root")


def note_interrupts() -> None:
    """In a command's main thread, notes a SIGINT before the handler in force runs: PySpark's, set as
    its context starts (build_session calls this then), cancels the jobs and unwinds."""
    if not _in_command.is_set() or threading.current_thread() is not threading.main_thread():
        return
    handler = signal.getsignal(signal.SIGINT)
    if getattr(handler, "notes_interrupts", False):
        return

    def noted(number: int, frame: Any) -> None:
        _interrupted.set()
        if callable(handler):
            handler(number, frame)
        raise KeyboardInterrupt

    noted.notes_interrupts = True  # type: ignore[attr-defined]
    signal.signal(signal.SIGINT, noted)


def run_command(main: Callable[[list[str]], Any], prog: str, argv: list[str] | None = None) -> None:
    """Runs a command's main on argv (less `--debug`); an InputError or a Ctrl-C ends it with one line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv
    _in_command.set()
    note_interrupts()
    root = logging.getLogger()
    if not any(isinstance(f, _BrokenCallsUnlogged) for f in root.filters):
        root.addFilter(_BrokenCallsUnlogged())
    try:
        main([a for a in argv if a != DEBUG_FLAG])
    except InputError as error:
        if debug:
            raise
        _refused(prog, error)
    except BaseException as error:
        task_error = raised_in_a_task(error) or unreadable_file(error)
        if task_error is not None and not debug and not _interrupted.is_set():
            _refused(prog, task_error)
        # Interrupted, whatever the call it broke raised (PySpark's handler calls into the JVM).
        if debug or not _interrupted.is_set():
            raise
        print(f"\n{prog}: interrupted{_log_named()}", file=sys.stderr, flush=True)  # below a live bar
        sys.exit(EXIT_INTERRUPTED)


def _refused(prog: str, error: InputError) -> NoReturn:
    print(f"{prog}: error: {error}{_log_named()}", file=sys.stderr, flush=True)
    sys.exit(EXIT_INPUT_ERROR)


def _log_named() -> str:
    log = os.environ.get(LOG_FILE_ENV)
    return f" (log: {log})" if log and os.path.isfile(log) else ""
