"""Rows of quoted tsv/csv whose fields hold line ends (a definition's `multiline`): a file's lines joined
into the rows they make, where spark_jobs/raw_formats.py reads each file as one Spark partition of its
lines in order (a Python worker per partition, through Arrow).

A row goes on past its line when the line ends inside a quoted field, read as Spark's CSV parser reads
one: a field is quoted only when it starts with the quote (a quote later in a field is a character of
it), and a doubled quote inside a quoted field is one quote. Whether a line that starts a row opens one
is a regular expression over the line, run by Arrow over each batch; only batches with such a line are
joined line by line in Python. Lines are bytes throughout (a line that is not UTF-8 reaches the parser's
BAD_BYTES check as it was read), so the separator and the quote are ASCII.

A joined row is kept only when it holds the definition's number of fields. Otherwise, and where a
quote stays open for MAX_ROW_LINES lines or to the file's end, the first line is a row of its own (which
the parser then refuses) and the lines after it are read again: a stray quote costs its own row, not the
rows after it. Each line's states and field counts are worked out once, so reading lines again costs
no more matching. Each row keeps its first line's number: LINES_BEFORE is how many lines the file's
earlier rows took beyond one each, added to the row's position in the partition.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql.pandas.types import from_arrow_schema

from rec_plugin.schema import DAY, RAW_LINE, SOURCE_FILE

MAX_ROW_LINES = 1_000
LINES_BEFORE = "_lines_before"
_NO_PARSE = -1
# The lines frame of raw_formats._read_lines (a line as read, and less its final CR), and its rows.
LINE = "_line"
LINE_COLUMNS = (DAY, SOURCE_FILE, RAW_LINE, LINE)
_ARROW_ROWS = pa.schema(
    [
        (DAY, pa.int32()),
        (SOURCE_FILE, pa.string()),
        (RAW_LINE, pa.string()),
        (LINE, pa.string()),
        (LINES_BEFORE, pa.int64()),
    ]
)
ROWS_SCHEMA = from_arrow_schema(_ARROW_ROWS)  # the rows as Spark's mapInArrow is told them


@dataclass(frozen=True)
class QuoteGrammar:
    """Line-end states of a separator and quote, as patterns that hold in both Python's `re` and the
    RE2 that Arrow runs (no lookaround or backreference; each unambiguous, so either engine agrees),
    and the parts of a row they are made of."""

    opens: str  # a line that starts a row ends inside a quoted field
    stays_open: str  # a line that starts inside a quoted field ends inside one (the same or another)
    inside: str  # a quoted field's text: a quote in it is doubled
    field: str  # a closed quoted field (and what a sloppy writer put after it), or an unquoted one

    @classmethod
    def of(cls, separator: str, quote: str) -> QuoteGrammar:
        s, q = _literal(separator), _literal(quote)
        inside = f"(?:[^{q}]|{q}{q})*"
        closed = f"{q}{inside}{q}[^{s}{q}]*"
        plain = f"(?:[^{q}{s}][^{s}]*)?"  # an unquoted field: it may hold a quote after its start
        fields_then_open = f"(?:(?:{closed}|{plain}){s})*{q}{inside}$"
        stays_open = f"^{inside}(?:$|{q}[^{s}{q}]*{s}{fields_then_open})"
        return cls(f"^{fields_then_open}", stays_open, inside, f"{closed}|{plain}")


def _literal(character: str) -> str:
    """A character as itself in a pattern of either engine, in a class too (re.escape's escaped tab
    is no escape to RE2)."""
    return "\\" + character if character in r"\^$.|?*+()[]{}-" else character


class _LineReader:
    """The grammar's patterns over a line's bytes: the separators a line passes outside quoted fields,
    read from a row's start or from inside a quoted field."""

    def __init__(self, separator: str, quote: str) -> None:
        grammar = QuoteGrammar.of(separator, quote)
        self.opens_pattern = grammar.opens
        self.stays_open = re.compile(grammar.stays_open.encode())
        self.inside = re.compile(grammar.inside.encode())
        self.field = re.compile(grammar.field.encode())
        self.open_field = re.compile(f"{_literal(quote)}{grammar.inside}$".encode())
        self.separator, self.quote = ord(separator), ord(quote)

    def separators_from_start(self, line: bytes, at: int = 0) -> int | None:
        """The separators between the fields of `line[at:]`, read from a field's start; None where a
        field does not parse (its last field may stay open)."""
        separators = 0
        while not self.open_field.match(line, at):
            end = self.field.match(line, at).end()  # type: ignore[union-attr]  (a field may be empty)
            if end == len(line):
                return separators
            if line[end] != self.separator:
                return None
            separators, at = separators + 1, end + 1
        return separators

    def separators_from_inside(self, line: bytes) -> int | None:
        """The same for a line read from inside a quoted field: 0 if the field stays open through it."""
        at = self.inside.match(line).end()  # type: ignore[union-attr]
        if at == len(line):
            return 0
        at += 1  # the closing quote, then what a sloppy writer put after it
        while at < len(line) and line[at] not in (self.separator, self.quote):
            at += 1
        if at == len(line):
            return 0
        if line[at] == self.quote:
            return None
        rest = self.separators_from_start(line, at + 1)
        return None if rest is None else rest + 1


class _RowJoiner:
    """One file's state: its lines not yet made into rows (from `start`), each line's states and counts
    once worked out, and the lines and rows made so far."""

    def __init__(self, separator: str, quote: str, fields: int) -> None:
        self.reader = _LineReader(separator, quote)
        self.fields = fields
        self.raws: list[bytes] = []
        self.lines: list[bytes] = []
        self.opens: list[bool] = []
        self.stays: list[bool | None] = []  # read from inside a quoted field, it ends inside one
        self.inside_separators: list[int | None] = []  # so read, its separators (_NO_PARSE: none)
        self.start = 0
        self.open_from = self.open_to = 0  # the lines in [open_from, open_to) stay open
        self.lines_done = 0  # the file's lines before self.lines[0]
        self.rows_out = 0
        self.day: int | None = None
        self.file: str | None = None
        self.out: list[tuple[bytes, bytes, int]] = []  # (raw, line, LINES_BEFORE) of rows made

    def feed(self, batch: pa.RecordBatch) -> pa.RecordBatch | None:
        if batch.num_rows == 0:
            return None
        self.day, self.file = batch.column(DAY)[0].as_py(), batch.column(SOURCE_FILE)[0].as_py()
        raws, lines = (batch.column(name).view(pa.binary()) for name in (RAW_LINE, LINE))
        opens = np.asarray(pc.match_substring_regex(lines, self.reader.opens_pattern))
        if self.start == len(self.lines) and not opens.any():  # the common case: every line is a row
            self._drop_made_lines()
            befores = pa.array(np.full(batch.num_rows, self.lines_done - self.rows_out))
            self.lines_done += batch.num_rows
            self.rows_out += batch.num_rows
            return _rows(batch.column(DAY), batch.column(SOURCE_FILE), raws, lines, befores)
        self.raws += raws.to_pylist()
        self.lines += lines.to_pylist()
        self.opens += opens.tolist()
        self.stays += [None] * batch.num_rows
        self.inside_separators += [None] * batch.num_rows
        self._join(at_end=False)
        return self._made()

    def finish(self) -> pa.RecordBatch | None:
        """The file's end: a row still open gives up its first line and its other lines are read again."""
        self._join(at_end=True)
        return self._made()

    def _join(self, at_end: bool) -> None:
        """Rows made of the lines from `start` on, up to a row that may go on past the lines held."""
        while self.start < len(self.lines):
            first = self.start
            if not self.opens[first]:
                self._make_row(first, first)
                continue
            last = self._first_closing(first + 1, min(len(self.lines), first + MAX_ROW_LINES))
            if last is None:
                if not at_end and len(self.lines) - first < MAX_ROW_LINES:
                    break  # the next batch may close it
                self._make_row(first, first)
            elif self._row_fields(first, last) == self.fields:
                self._make_row(first, last)
            else:
                self._make_row(first, first)
        self._drop_made_lines()

    def _first_closing(self, begin: int, end: int) -> int | None:
        """The first line in [begin, end) that, read from inside a quoted field, closes it. Whether a
        line does is the same whatever row it continues, so a line read again is not matched again."""
        if not self.open_from <= begin <= self.open_to:
            self.open_from = self.open_to = begin
        while self.open_to < end:
            at = self.open_to
            if self.stays[at] is None:
                self.stays[at] = bool(self.reader.stays_open.match(self.lines[at]))
            if not self.stays[at]:
                return at
            self.open_to += 1
        return None

    def _row_fields(self, first: int, last: int) -> int | None:
        """The fields of lines first..last joined, None where one of them does not parse."""
        for at in range(first + 1, last + 1):
            if self.inside_separators[at] is None:
                counted = self.reader.separators_from_inside(self.lines[at])
                self.inside_separators[at] = _NO_PARSE if counted is None else counted
        continued = self.inside_separators[first + 1 : last + 1]
        head = self.reader.separators_from_start(self.lines[first])
        if head is None or _NO_PARSE in continued:
            return None
        return head + sum(continued) + 1  # type: ignore[arg-type]

    def _make_row(self, first: int, last: int) -> None:
        """Lines first..last as one row, numbered by its first line."""
        self.rows_out += 1
        before = self.lines_done + first + 1 - self.rows_out
        self.out.append(
            (b"\n".join(self.raws[first : last + 1]), b"\n".join(self.lines[first : last + 1]), before)
        )
        self.start = last + 1

    def _drop_made_lines(self) -> None:
        for held in (self.raws, self.lines, self.opens, self.stays, self.inside_separators):
            del held[: self.start]
        self.open_from, self.open_to = (max(0, at - self.start) for at in (self.open_from, self.open_to))
        self.lines_done += self.start
        self.start = 0

    def _made(self) -> pa.RecordBatch | None:
        if not self.out:
            return None
        raws, lines, befores = zip(*self.out, strict=True)
        self.out = []
        day, file = (
            pa.array([self.day] * len(raws), pa.int32()),
            pa.array([self.file] * len(raws), pa.string()),
        )
        return _rows(day, file, pa.array(raws, pa.binary()), pa.array(lines, pa.binary()), pa.array(befores))


def _rows(
    day: pa.Array, file: pa.Array, raws: pa.Array, lines: pa.Array, befores: pa.Array
) -> pa.RecordBatch:
    """A batch of the rows; the lines are bytes, viewed as text unchecked (the parser refuses those
    that are not UTF-8)."""
    columns = [day.cast(pa.int32()), file.cast(pa.string()), raws.view(pa.string()), lines.view(pa.string())]
    return pa.RecordBatch.from_arrays([*columns, befores.cast(pa.int64())], schema=_ARROW_ROWS)


def joined_rows(
    separator: str, quote: str, fields: int
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """mapInArrow's function over one file's lines (LINE_COLUMNS) -> its rows (ROWS_SCHEMA) of
    `fields` fields each, where they are joined."""

    def join(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        joiner = _RowJoiner(separator, quote, fields)
        for batch in batches:
            if (rows := joiner.feed(batch)) is not None:
                yield rows
        if (rows := joiner.finish()) is not None:
            yield rows

    return join
