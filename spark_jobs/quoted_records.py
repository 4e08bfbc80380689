"""Rows of quoted tsv/csv whose fields hold line ends (a definition's `multiline`): a file's lines joined
into the rows they make, where spark_jobs/raw_formats.py reads each file as one Spark partition of its
lines in order (a Python worker per partition, through Arrow).

A line opens a row unless the quotes before it in its file are unbalanced (a doubled quote inside a
quoted field counts twice, so it keeps the balance). A quote left open for MAX_ROW_LINES lines, or to
the file's end, makes its first line one row of its own (which the CSV parser then refuses) and the
lines after it are read again as lines: one stray quote costs one row, not the rest of the file.
Each row keeps its first line's number: LINES_BEFORE is how many lines the file's earlier rows took
beyond one each, added to the row's position in the partition.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rec_plugin.schema import DAY, SOURCE_FILE

MAX_ROW_LINES = 1_000
LINES_BEFORE = "_lines_before"
# The lines frame of raw_formats._read_lines, and what each row of it becomes.
LINE_COLUMNS = (DAY, SOURCE_FILE, "raw_line", "_line")
ROWS_SCHEMA = f"{DAY} int, {SOURCE_FILE} string, raw_line string, _line string, {LINES_BEFORE} bigint"


class _RowJoiner:
    """One file's state: the lines of the row still open, and the lines and rows seen so far."""

    def __init__(self, quote: str) -> None:
        self.quote = quote
        self.open_lines: list[tuple[str, str]] = []  # (raw line, line) of the row being read
        self.unbalanced = False
        self.lines_seen = 0
        self.rows_out = 0
        self.day: int | None = None
        self.file: str | None = None
        self.out: list[tuple[str, str, int]] = []  # (raw, line, LINES_BEFORE) of rows made

    def feed(self, batch: pa.RecordBatch) -> pa.RecordBatch | None:
        if batch.num_rows == 0:
            return None
        self.day, self.file = batch.column(0)[0].as_py(), batch.column(1)[0].as_py()
        odd = np.asarray(pc.count_substring(batch.column(3), self.quote)) % 2 == 1
        if not self.open_lines and not odd.any():  # the common case: every line is a row
            before = self.lines_seen - self.rows_out
            self.lines_seen += batch.num_rows
            self.rows_out += batch.num_rows
            constant = pa.array(np.full(batch.num_rows, before, dtype=np.int64))
            return pa.RecordBatch.from_arrays([*batch.columns, constant], [*LINE_COLUMNS, LINES_BEFORE])
        lines = zip(batch.column(2).to_pylist(), batch.column(3).to_pylist(), odd.tolist(), strict=True)
        self._take(deque(lines))
        return self._made()

    def finish(self) -> pa.RecordBatch | None:
        """The file's end: a row still open gives up its first line and its other lines are read again."""
        while self.open_lines:
            self._take(self._give_up_first_line())
        return self._made()

    def _take(self, lines: deque[tuple[str, str, bool]]) -> None:
        while lines:
            raw, line, odd = lines.popleft()
            self.lines_seen += 1
            self.open_lines.append((raw, line))
            self.unbalanced ^= odd
            if not self.unbalanced:
                self._make_row(self.open_lines)
                self.open_lines = []
            elif len(self.open_lines) >= MAX_ROW_LINES:
                lines.extendleft(reversed(self._give_up_first_line()))

    def _give_up_first_line(self) -> deque[tuple[str, str, bool]]:
        """The open row's first line as a row alone; its other lines, to be read again."""
        first, *rest = self.open_lines
        self.lines_seen -= len(rest)
        self.open_lines, self.unbalanced = [], False
        self._make_row([first])
        return deque((raw, line, line.count(self.quote) % 2 == 1) for raw, line in rest)

    def _make_row(self, lines: list[tuple[str, str]]) -> None:
        self.rows_out += 1
        first_line_number = self.lines_seen - len(lines) + 1
        raws, texts = zip(*lines, strict=True)
        self.out.append(("\n".join(raws), "\n".join(texts), first_line_number - self.rows_out))

    def _made(self) -> pa.RecordBatch | None:
        if not self.out:
            return None
        raws, texts, befores = zip(*self.out, strict=True)
        self.out = []
        columns = [
            pa.array([self.day] * len(raws), pa.int32()),
            pa.array([self.file] * len(raws), pa.string()),
            pa.array(raws, pa.string()),
            pa.array(texts, pa.string()),
            pa.array(befores, pa.int64()),
        ]
        return pa.RecordBatch.from_arrays(columns, [*LINE_COLUMNS, LINES_BEFORE])


def joined_rows(quote: str) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """mapInArrow's function over one file's lines (LINE_COLUMNS) -> its rows (ROWS_SCHEMA)."""

    def join(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        joiner = _RowJoiner(quote)
        for batch in batches:
            if (rows := joiner.feed(batch)) is not None:
                yield rows
        if (rows := joiner.finish()) is not None:
            yield rows

    return join
