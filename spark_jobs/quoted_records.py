"""Rows of quoted tsv/csv whose fields hold line ends (a definition's `multiline`): a file's lines joined
into the rows they make, where spark_jobs/raw_formats.py reads each file as one Spark partition of its
lines in order (a Python worker per partition, through Arrow).

A row goes on past its line when the line ends inside a quoted field, read as Spark's CSV parser reads
one: a field is quoted only when it starts with the quote (a quote later in a field is a character of
it), and a doubled quote inside a quoted field is one quote. Whether a line that starts a row opens one
is a regular expression over the line, run by Arrow over each batch; only batches with such a line are
joined line by line in Python. A quote left open for MAX_ROW_LINES lines, or to the file's end, makes
its first line one row of its own (which the parser then refuses) and the lines after it are read
again: one stray quote costs one row, not the rest of the file. Each row keeps its first line's
number: LINES_BEFORE is how many lines the file's earlier rows took beyond one each, added to the
row's position in the partition.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rec_plugin.schema import DAY, SOURCE_FILE

MAX_ROW_LINES = 1_000
LINES_BEFORE = "_lines_before"
# The lines frame of raw_formats._read_lines, and what each row of it becomes.
LINE_COLUMNS = (DAY, SOURCE_FILE, "raw_line", "_line")
ROWS_SCHEMA = f"{DAY} int, {SOURCE_FILE} string, raw_line string, _line string, {LINES_BEFORE} bigint"
_TYPES = (pa.int32(), pa.string(), pa.string(), pa.string(), pa.int64())


@dataclass(frozen=True)
class QuoteGrammar:
    """Line-end states of a separator and quote, as patterns that hold in both Python's `re` and the
    RE2 that Arrow runs (no lookaround or backreference; each unambiguous, so either engine agrees)."""

    opens: str  # a line that starts a row ends inside a quoted field
    stays_open: str  # a line that starts inside a quoted field ends inside one (the same or another)

    @classmethod
    def of(cls, separator: str, quote: str) -> QuoteGrammar:
        s, q = _literal(separator), _literal(quote)
        inside = f"(?:[^{q}]|{q}{q})*"  # a quoted field's text: a quote in it is doubled
        closed = f"{q}{inside}{q}[^{s}{q}]*"  # a quoted field (and what a sloppy writer put after it)
        plain = f"(?:[^{q}{s}][^{s}]*)?"  # an unquoted field: it may hold a quote after its start
        fields_then_open = f"(?:(?:{closed}|{plain}){s})*{q}{inside}$"
        return cls(f"^{fields_then_open}", f"^{inside}(?:$|{q}[^{s}{q}]*{s}{fields_then_open})")


def _literal(character: str) -> str:
    """A character as itself in a pattern of either engine, in a class too (re.escape's escaped tab
    is no escape to RE2)."""
    return "\\" + character if character in r"\^$.|?*+()[]{}-" else character


class _RowJoiner:
    """One file's state: the lines of the row still open, and the lines and rows seen so far."""

    def __init__(self, separator: str, quote: str) -> None:
        self.grammar = QuoteGrammar.of(separator, quote)
        self.opens, self.stays_open = re.compile(self.grammar.opens), re.compile(self.grammar.stays_open)
        self.open_lines: list[tuple[str, str]] = []  # (raw line, line) of the row being read
        self.lines_seen = 0
        self.rows_out = 0
        self.day: int | None = None
        self.file: str | None = None
        self.out: list[tuple[str, str, int]] = []  # (raw, line, LINES_BEFORE) of rows made

    def feed(self, batch: pa.RecordBatch) -> pa.RecordBatch | None:
        if batch.num_rows == 0:
            return None
        self.day, self.file = batch.column(0)[0].as_py(), batch.column(1)[0].as_py()
        opens = np.asarray(pc.match_substring_regex(batch.column(3), self.grammar.opens))
        if not self.open_lines and not opens.any():  # the common case: every line is a row
            before = self.lines_seen - self.rows_out
            self.lines_seen += batch.num_rows
            self.rows_out += batch.num_rows
            columns = [*batch.columns, pa.array(np.full(batch.num_rows, before, dtype=np.int64))]
            return pa.RecordBatch.from_arrays(
                [column.cast(kind) for column, kind in zip(columns, _TYPES, strict=True)],
                [*LINE_COLUMNS, LINES_BEFORE],
            )
        lines = zip(batch.column(2).to_pylist(), batch.column(3).to_pylist(), opens.tolist(), strict=True)
        self._take(deque(lines))
        return self._made()

    def finish(self) -> pa.RecordBatch | None:
        """The file's end: a row still open gives up its first line and its other lines are read again."""
        while self.open_lines:
            self._take(self._give_up_first_line())
        return self._made()

    def _take(self, lines: deque[tuple[str, str, bool]]) -> None:
        """Lines as (raw line, line, whether it opens a row when it starts one)."""
        while lines:
            raw, line, opens = lines.popleft()
            self.lines_seen += 1
            continues = bool(self.stays_open.match(line)) if self.open_lines else opens
            self.open_lines.append((raw, line))
            if not continues:
                self._make_row(self.open_lines)
                self.open_lines = []
            elif len(self.open_lines) >= MAX_ROW_LINES:
                lines.extendleft(reversed(self._give_up_first_line()))

    def _give_up_first_line(self) -> deque[tuple[str, str, bool]]:
        """The open row's first line as a row alone; its other lines, to be read again."""
        first, *rest = self.open_lines
        self.lines_seen -= len(rest)
        self.open_lines = []
        self._make_row([first])
        return deque((raw, line, bool(self.opens.match(line))) for raw, line in rest)

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
        values = ([self.day] * len(raws), [self.file] * len(raws), raws, texts, befores)
        columns = [pa.array(v, kind) for v, kind in zip(values, _TYPES, strict=True)]
        return pa.RecordBatch.from_arrays(columns, [*LINE_COLUMNS, LINES_BEFORE])


def joined_rows(separator: str, quote: str) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """mapInArrow's function over one file's lines (LINE_COLUMNS) -> its rows (ROWS_SCHEMA)."""

    def join(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        joiner = _RowJoiner(separator, quote)
        for batch in batches:
            if (rows := joiner.feed(batch)) is not None:
                yield rows
        if (rows := joiner.finish()) is not None:
            yield rows

    return join
