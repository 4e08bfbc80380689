"""The driver JVM's console, less the warning the JVM prints as it starts.

Spark's launcher starts every JVM with `--add-modules=jdk.incubator.vector` (no setting removes it),
and the JVM then prints `WARNING: Using incubator modules: jdk.incubator.vector` on stderr before any
of our code runs: a failing command would show two lines, not its one-line error. PySpark starts the
JVM with the stderr it is given; here that is a pipe, which a thread drains to this process's stderr
for the JVM's life, dropping that line where it comes among the JVM's first lines (after the JVM's
`Picked up JAVA_TOOL_OPTIONS` notices, say). The rest passes byte for byte (Spark's progress bar
redraws itself with carriage returns, never a newline).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import TypeVar

JVM_START_WARNING = b"WARNING: Using incubator modules: jdk.incubator.vector\n"
# The JVM's own lines before it runs any code: where the warning can be.
_HEAD_LINES = 8
_CHUNK = 65536
# How long a write waits for a full (non-blocking) console to take more.
_FULL_CONSOLE_WAIT_SECONDS = 0.01
# How long a failed start waits for the JVM's last words before its error is raised.
_LAST_WORDS_SECONDS = 2.0

Started = TypeVar("Started")


def start_without_warning(start: Callable[[int], Started]) -> Started:
    """Runs `start`, which launches the JVM with the stderr file descriptor it is given."""
    read_end, write_end = os.pipe()
    console = os.dup(2)  # where the thread writes for the JVM's life; the thread closes it
    drain = threading.Thread(target=_drain, args=(read_end, console), name="jvm-stderr", daemon=True)
    drain.start()
    try:
        return start(write_end)
    except BaseException:
        os.close(write_end)
        write_end = -1
        drain.join(_LAST_WORDS_SECONDS)  # the JVM's own account of why, before the error
        raise
    finally:
        if write_end >= 0:
            os.close(write_end)  # the JVM holds its own copy; the pipe ends when the JVM does


def _drain(source: int, console: int) -> None:
    """Copies `source` to `console` until the JVM exits, less the start warning where a line among
    its first ones is that warning. Text without a line end yet passes at once (a progress bar), but
    for what may still become the warning. It reads on after a failed write, so the JVM never waits
    on a full pipe."""
    shown = _Console(console)
    in_head, lines, mid_line, pending = True, 0, False, b""
    while chunk := os.read(source, _CHUNK):
        if not in_head:
            shown.write(chunk)
            continue
        pending += chunk
        while in_head:
            line, newline, rest = pending.partition(b"\n")
            if not newline:
                if mid_line or not JVM_START_WARNING.startswith(line):
                    shown.write(line)
                    mid_line, pending = mid_line or bool(line), b""
                break
            if mid_line or line + newline != JVM_START_WARNING:
                shown.write(line + newline)
            else:
                in_head = False
            lines, mid_line, pending = lines + 1, False, rest
            in_head = in_head and lines < _HEAD_LINES
        if not in_head:
            shown.write(pending)
            pending = b""
    shown.write(pending)
    os.close(source)
    os.close(console)


class _Console:
    """This process's stderr as the drain writes it: waiting while it is full (a non-blocking
    terminal), given up once it is gone (a closed terminal)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.gone = False

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self.gone:
            try:
                view = view[os.write(self.fd, view) :]
            except BlockingIOError:
                time.sleep(_FULL_CONSOLE_WAIT_SECONDS)
            except Exception:  # noqa: BLE001 - the thread must read on whatever the console does
                self.gone = True
