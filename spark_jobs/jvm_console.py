"""The driver JVM's console, less the warning the JVM prints as it starts.

Spark's launcher starts every JVM with `--add-modules=jdk.incubator.vector` (no setting removes it),
and the JVM then prints `WARNING: Using incubator modules: jdk.incubator.vector` on stderr before any
of our code runs: a failing command would show two lines, not its one-line error. PySpark starts the
JVM with this process's stderr, so for the length of the start the stderr it inherits is a pipe
that a thread drains to the real stderr, dropping that line if it comes first. The rest passes byte
for byte (Spark's progress bar redraws itself with carriage returns, never a newline).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

JVM_START_WARNING = b"WARNING: Using incubator modules: jdk.incubator.vector\n"
_CHUNK = 65536


def start_without_warning(start: Callable[[], None]) -> None:
    """Runs `start` (which launches the JVM) with a stderr that drops the JVM's start warning."""
    read_end, write_end = os.pipe()
    console = os.dup(2)  # where the thread writes for the JVM's life; the thread owns it
    threading.Thread(target=_drain, args=(read_end, console), name="jvm-stderr", daemon=True).start()
    saved = os.dup(2)
    os.dup2(write_end, 2)
    try:
        start()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(write_end)  # the JVM holds its own copy; the pipe ends when the JVM does


def _drain(source: int, console: int) -> None:
    """Copies `source` to `console` until the JVM exits, less the start warning if its output
    begins with it. It reads on after a failed write, so the JVM never waits on a full pipe."""
    head: bytes | None = b""
    writable = True
    while chunk := os.read(source, _CHUNK):
        if head is not None:
            head += chunk
            if len(head) < len(JVM_START_WARNING) and JVM_START_WARNING.startswith(head):
                continue  # not yet known to be the warning or something else
            chunk, head = head.removeprefix(JVM_START_WARNING), None
        if writable and chunk:
            try:
                _write_all(console, chunk)
            except OSError:
                writable = False  # the console went away (a closed terminal)
    if head:
        _write_all(console, head)
    os.close(source)
    os.close(console)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
