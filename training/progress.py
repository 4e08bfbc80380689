"""Training's progress bar, readable where it lands: a live bar on a terminal, and one line per update
(every 10 s) where the output is a file or is relayed by Spark from a worker process, where tqdm's
carriage returns would pile a whole run's updates onto one line."""

from __future__ import annotations

import io
import sys
from typing import Any

from tqdm import tqdm

LOG_INTERVAL_S = 10.0


class LinePerUpdate(io.TextIOBase):
    """A stream for tqdm that writes each refresh of the bar as a line of its own."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        line = text.replace("\r", "").strip()
        if line:
            self.stream.write(line + "\n")
            self.stream.flush()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(**options: Any) -> tqdm:
    """A tqdm bar over sys.stderr with `options`; its rate is the one samples/s shown."""
    if sys.stderr.isatty():
        return tqdm(mininterval=1.0, **options)
    return tqdm(file=LinePerUpdate(sys.stderr), mininterval=LOG_INTERVAL_S, ncols=100, **options)
