"""The training loader: Petastorm over the featurized Delta files, sharded per rank, batched as tensors.

Two Petastorm faults are kept away from users. Its default thread pool races and sometimes ends an
epoch empty with no error, so the reader runs on the single-threaded `dummy` pool (parquet decoding
is multithreaded inside Arrow anyway) and every epoch's row count is checked against the Delta
table's. Its default torch DataLoader collates row by row, so batches are cut here from whole
row-group column arrays instead. Its batch reader takes list columns only when every row has the
same length, so variable-length lists are padded per row group on the way in (`_pad_lists`) and
unpadded into TorchRec's jagged layout (values + offsets) here.

A batch is keyed by the workflow's schema: dense float32 [B, n_continuous], the single-id features
as one int64 [B, n_categorical] tensor with their names (KeyedIds), each list feature as JaggedIds,
the label and a weight; `Batch.inputs()` is the models' call (training/models/ctr.py).
"""

from __future__ import annotations

import hashlib
import heapq
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, partial
from typing import NamedTuple

import fsspec
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from petastorm import TransformSpec, make_batch_reader

from rec_plugin.schema import Schema

# Petastorm 0.12 calls pyarrow's legacy dataset API (the one pyarrow 14 keeps, with a warning per call).
warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm\.")


class KeyedIds:
    """The single-id features of a batch: one int64 [B, n] tensor (one allocation per batch) and the
    features' names in its column order; `ids[name]` is that feature's [B] ids."""

    __slots__ = ("keys", "values")

    def __init__(self, keys: tuple[str, ...], values: torch.Tensor) -> None:
        self.keys, self.values = keys, values

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.values[:, self.keys.index(name)]

    def __len__(self) -> int:
        return len(self.keys)

    def __repr__(self) -> str:
        return f"KeyedIds({list(self.keys)}, {tuple(self.values.shape)})"


class JaggedIds(NamedTuple):
    """One list feature of a batch in TorchRec's jagged layout: row i's ids are
    values[offsets[i]:offsets[i + 1]]."""

    values: torch.Tensor  # int64 [N]
    offsets: torch.Tensor  # int64 [B + 1]

    def row(self, index: int) -> torch.Tensor:
        return self.values[self.offsets[index] : self.offsets[index + 1]]

    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]


class Batch(NamedTuple):
    """One training batch of the schema's columns; `weight` is 0 for the padding rows of a rank that
    ran out of data."""

    dense: torch.Tensor  # float32 [B, n_continuous], schema.continuous order
    ids: KeyedIds  # int64 [B, n_categorical], schema.categorical order
    lists: dict[str, JaggedIds]  # schema.lists order
    label: torch.Tensor  # float32 [B]
    weight: torch.Tensor  # float32 [B]

    def to(self, device: torch.device) -> Batch:
        """The batch on `device`: from pinned host memory with asynchronous copies when it is a GPU
        (the loop's prefetch thread calls this, so the copy overlaps the step before), as is on CPU."""
        if device.type == "cpu":
            return self

        def moved(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.pin_memory().to(device, non_blocking=True)

        lists = {name: JaggedIds(moved(j.values), moved(j.offsets)) for name, j in self.lists.items()}
        ids = KeyedIds(self.ids.keys, moved(self.ids.values))
        return Batch(moved(self.dense), ids, lists, moved(self.label), moved(self.weight))

    def inputs(self) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """The model's arguments: (dense, ids, list values, list offsets)."""
        lists = list(self.lists.values())
        return self.dense, self.ids.values, [j.values for j in lists], [j.offsets for j in lists]


@dataclass(frozen=True)
class FileSet:
    """The parquet files of some days of a pinned features table version, as the qualified URIs Delta
    lists (`file:/...`, `s3a://...`, which Petastorm reads as they are), and their row count."""

    files: tuple[str, ...]
    rows: int

    def to_dict(self) -> dict:
        return {"files": list(self.files), "rows": self.rows}

    @classmethod
    def from_dict(cls, data: dict) -> FileSet:
        return cls(tuple(data["files"]), int(data["rows"]))

    def dealing(self, ranks: int, batch_size: int, seed: int) -> str:
        """How an epoch of these files reaches the ranks' batches, as a checkpoint records it: a run
        checkpointed mid-epoch skips its done batches on resume only under the same dealing (files,
        ranks, batch size and the shuffle's seed); under another, other rows make those batches."""
        digest = hashlib.blake2b("\n".join(self.files).encode(), digest_size=6).hexdigest()
        return f"{SHARDING}:{ranks}x{batch_size}:seed {seed}:files {digest}"


def read_id_lists(files: Sequence[str], columns: Sequence[str]) -> dict[str, list[np.ndarray]]:
    """Each row's ids of some list<int> columns of whole parquet files (qualified URIs, read through
    fsspec), in file and row order: what scoring a user's bag against their held-out items reads."""
    read: dict[str, list[np.ndarray]] = {column: [] for column in columns}
    for uri in files:
        filesystem, path = fsspec.core.url_to_fs(uri)
        table = pq.read_table(path, columns=list(columns), filesystem=filesystem)
        for column in columns:
            lists = table.column(column).combine_chunks()
            values = lists.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
            offsets = lists.offsets.to_numpy()
            read[column].extend(np.split(values, offsets[1:-1] - offsets[0]))
    return read


@cache
def _footer(uri: str) -> tuple[int, int]:
    """A parquet file's (rows, row groups) from its footer, once per process (a Delta table's data
    files are never rewritten in place)."""
    filesystem, path = fsspec.core.url_to_fs(uri)
    with filesystem.open(path, "rb") as handle:
        metadata = pq.ParquetFile(handle).metadata
        return metadata.num_rows, metadata.num_row_groups


def _footers(files: Sequence[str]) -> list[tuple[int, int]]:
    """Each parquet file's footer counts (qualified URIs, read through fsspec; a pool of threads, as
    object stores answer one small read at a time)."""
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(files)))) as pool:
        return list(pool.map(_footer, files))


def parquet_rows(files: Sequence[str]) -> list[int]:
    """Each parquet file's row count."""
    return [rows for rows, _ in _footers(files)]


def parquet_row_groups(files: Sequence[str]) -> int:
    """The row groups of some parquet files, all together."""
    return sum(groups for _, groups in _footers(files))


def balanced_shards(rows: Sequence[int], size: int) -> list[list[int]]:
    """Indexes of the files each of `size` ranks reads: largest file first to the rank holding the
    fewest rows (ties to the lower file index and rank), so no rank holds more than 4/3 of the best
    split. Featurize writes files of 50k rows plus each task's remainder; dealt in name order, one of
    two ranks got 192k rows and the other 102k."""
    ranks = [(0, rank) for rank in range(size)]
    shards: list[list[int]] = [[] for _ in range(size)]
    for index in sorted(range(len(rows)), key=lambda i: (-rows[i], i)):
        held, rank = heapq.heappop(ranks)
        shards[rank].append(index)
        heapq.heappush(ranks, (held + rows[index], rank))
    return [sorted(shard) for shard in shards]


def rank_files(files: Sequence[str], rank: int, size: int) -> tuple[str, ...]:
    """The whole files rank `rank` of `size` reads: `balanced_shards` of their row counts."""
    if size == 1:
        return tuple(files)
    return tuple(files[index] for index in balanced_shards(parquet_rows(files), size)[rank])


# How BatchLoader deals a FileSet to ranks, as a checkpoint records it: a run checkpointed mid-epoch
# under another dealing cannot skip its batches. ROW_GROUPS_BY_COUNT: every rank's Petastorm shard,
# the only dealing before files were dealt by rows (checkpoints of then record none).
SHARDING, ROW_GROUPS_BY_COUNT = "files_by_rows", "row_groups_by_count"


class EpochRowCountError(RuntimeError):
    """An epoch read a different number of rows than the table holds: data would be silently lost."""


def check_epoch_rows(read: int, expected: int, what: str) -> None:
    if read != expected:
        raise EpochRowCountError(
            f"{what}: the epoch read {read:,} rows but the table holds {expected:,}; refusing to continue"
        )


def padding_batch(schema: Schema, size: int) -> Batch:
    """A batch of weight 0: lets a rank whose shard is exhausted keep step with the others."""
    empty = JaggedIds(torch.zeros(0, dtype=torch.int64), torch.zeros(size + 1, dtype=torch.int64))
    ids = torch.zeros(size, len(schema.categorical), dtype=torch.int64)
    return Batch(
        torch.zeros(size, len(schema.continuous)),
        KeyedIds(tuple(schema.categorical.names), ids),
        {name: empty for name in schema.lists.names},
        torch.zeros(size),
        torch.zeros(size),
    )


def jagged_arrays(cells: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """(values, offsets), int64, of a list column given as one array per row (None for a null list:
    no ids), as Petastorm and pandas hand Arrow list columns over: one concatenate and a cumulative
    sum of the lengths."""
    present = [cell for cell in cells if cell is not None]
    lengths = np.fromiter((0 if cell is None else len(cell) for cell in cells), np.int64, len(cells))
    offsets = np.zeros(len(cells) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = np.concatenate(present).astype(np.int64, copy=False) if present else np.zeros(0, np.int64)
    return values, offsets


# After a row's ids in a padded list column: no id (negative ids included, which the model refuses).
PAD = np.iinfo(np.int32).min


def _pad_lists(columns: tuple[str, ...], frame: pd.DataFrame) -> pd.DataFrame:
    """Each list column of a row group as rows of one length, PAD after a row's ids (a null list has
    none): Petastorm's batch reader stacks a list column's rows into one matrix, which variable-length
    rows would fail. Runs in Petastorm's worker (a TransformSpec) on list columns only."""
    rows = len(frame)
    for column in columns:
        values, offsets = jagged_arrays(frame[column].to_numpy())
        lengths = offsets[1:] - offsets[:-1]
        padded = np.full((rows, int(lengths.max(initial=0))), PAD, dtype=np.int32)
        positions = np.arange(len(values)) - np.repeat(offsets[:-1], lengths)
        padded[np.repeat(np.arange(rows), lengths), positions] = values
        frame[column] = list(padded)
    return frame


class _Jagged(NamedTuple):
    """A list column as numpy arrays: row i is values[offsets[i]:offsets[i + 1]] (int64 both)."""

    values: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_padded(cls, padded: np.ndarray) -> _Jagged:
        """From the [rows, width] matrix `_pad_lists` made (PAD after each row's ids)."""
        present = padded != PAD
        offsets = np.zeros(len(padded) + 1, dtype=np.int64)
        np.cumsum(present.sum(axis=1), out=offsets[1:])
        return cls(padded[present].astype(np.int64), offsets)

    def take(self, order: np.ndarray) -> _Jagged:
        """Rows in `order`: each row's ids kept together."""
        lengths = (self.offsets[1:] - self.offsets[:-1])[order]
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # For every output element: its row's start in the source plus its position within the row.
        index = np.repeat(self.offsets[:-1][order] - offsets[:-1], lengths) + np.arange(offsets[-1])
        return _Jagged(self.values[index], offsets)

    def rows(self, start: int, stop: int) -> _Jagged:
        first, last = self.offsets[start], self.offsets[stop]
        return _Jagged(self.values[first:last], self.offsets[start : stop + 1] - first)

    @staticmethod
    def concatenate(parts: Sequence[_Jagged]) -> _Jagged:
        shifts = np.cumsum([0, *(p.offsets[-1] for p in parts[:-1])])
        offsets = np.concatenate([parts[0].offsets[:1], *(p.offsets[1:] + s for p, s in zip(parts, shifts))])
        return _Jagged(np.concatenate([p.values for p in parts]), offsets)


# A chunk of rows: label, dense, ids as arrays of B rows, then one _Jagged per list feature.
Part = np.ndarray | _Jagged


def _take(part: Part, order: np.ndarray | slice) -> Part:
    if isinstance(part, _Jagged):
        return part if isinstance(order, slice) else part.take(order)
    return part[order]


def _rows(part: Part, start: int, stop: int) -> Part:
    return part.rows(start, stop) if isinstance(part, _Jagged) else part[start:stop]


def _concatenate(parts: Sequence[Part]) -> Part:
    if len(parts) == 1:
        return parts[0]
    return _Jagged.concatenate(parts) if isinstance(parts[0], _Jagged) else np.concatenate(parts)


class BatchLoader:
    """Batches of one rank's shard of a FileSet, reshuffled every epoch from (seed, epoch).

    Reads exactly the schema's label, continuous, categorical and list columns. With as many files
    as ranks or more, each rank reads whole files dealt by their row counts (`rank_files`); with
    fewer, Petastorm deals the row groups (SHARDING records which, for a resumed run), unless they
    too are fewer than the ranks (a tiny day): then whole files again, some ranks reading none and
    stepping on padding (Petastorm ends every rank's read in NoDataAvailableError there). Petastorm
    orders a rank's row groups from the epoch's seed, then rows are shuffled within a buffer of
    `shuffle_rows` rows (a list feature's ids move with their row). The order is a pure function of
    (seed, epoch, rank, size), so a resumed run can skip exactly the batches it had already trained
    on. With `whole_files` ranks always read whole files: a split any number of ranks can take
    (Petastorm refuses more ranks than row groups), some ranks getting no rows, which scoring takes
    and training's balanced steps do not."""

    def __init__(
        self,
        file_set: FileSet,
        schema: Schema,
        batch_size: int,
        rank: int = 0,
        size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        shuffle_rows: int = 200_000,
        whole_files: bool = False,
    ) -> None:
        self.file_set, self.batch_size = file_set, batch_size
        self.rank, self.size, self.seed, self.shuffle = rank, size, seed, shuffle
        files = file_set.files
        self.whole_files = size > 1 and (
            whole_files or len(files) >= size or parquet_row_groups(files) < size
        )
        self._shard: tuple[str, ...] | None = None
        self.shuffle_rows = shuffle_rows
        self.rows_read = 0
        self.label = schema.label.name
        self.dense = schema.continuous.names
        self.categorical = schema.categorical.names
        self.lists = schema.lists.names

    def _reader(self, epoch: int):  # noqa: ANN202 - petastorm's Reader
        lists = tuple(self.lists)
        padding = TransformSpec(
            partial(_pad_lists, lists), edit_fields=[(c, np.int32, (None,), False) for c in lists]
        )
        sharded = self.size > 1 and not self.whole_files
        return make_batch_reader(
            list(self._files()),
            schema_fields=[self.label, *self.dense, *self.categorical, *lists],
            transform_spec=padding if lists else None,
            reader_pool_type="dummy",
            seed=self.seed * 100_003 + epoch,
            shuffle_row_groups=self.shuffle,
            num_epochs=1,
            cur_shard=self.rank if sharded else None,
            shard_count=self.size if sharded else None,
        )

    def _files(self) -> tuple[str, ...]:
        """The files this rank reads (whole, or its row groups of, when Petastorm shards them)."""
        files = self.file_set.files
        if not self.whole_files:
            return files
        if self._shard is None:
            self._shard = rank_files(files, self.rank, self.size)
        return self._shard

    def _chunks(self, epoch: int) -> Iterator[tuple[Part, ...]]:
        """(label, dense, categorical, *lists) per row group, counted into rows_read."""
        if not self._files():
            return
        with self._reader(epoch) as reader:
            for group in reader:
                columns = group._asdict()
                label = np.asarray(columns[self.label], dtype=np.float32)
                rows = len(label)
                dense = _stacked(columns, self.dense, np.float32, rows)
                categorical = _stacked(columns, self.categorical, np.int64, rows)
                lists = [_Jagged.from_padded(columns[c]) for c in self.lists]
                self.rows_read += rows
                yield label, dense, categorical, *lists

    def _buffers(self, epoch: int) -> Iterator[tuple[Part, ...]]:
        """Concatenated chunks of about shuffle_rows rows, each permuted when shuffling."""
        rng = np.random.default_rng([self.seed, epoch, self.rank])
        pending: list[tuple[Part, ...]] = []
        pending_rows = 0

        def merged() -> tuple[Part, ...]:
            arrays = [_concatenate(parts) for parts in zip(*pending)]
            order = rng.permutation(len(arrays[0])) if self.shuffle else slice(None)
            return tuple(_take(a, order) for a in arrays)

        for chunk in self._chunks(epoch):
            pending.append(chunk)
            pending_rows += len(chunk[0])
            if pending_rows >= self.shuffle_rows:
                yield merged()
                pending, pending_rows = [], 0
        if pending:
            yield merged()

    def epoch(self, epoch: int, skip_batches: int = 0) -> Iterator[Batch]:
        """The epoch's batches (the last may be short), skipping the first `skip_batches`."""
        self.rows_read = 0
        carry: tuple[Part, ...] | None = None
        index = 0
        for arrays in self._buffers(epoch):
            if carry is not None:
                arrays = tuple(_concatenate(pair) for pair in zip(carry, arrays))
            whole = len(arrays[0]) // self.batch_size * self.batch_size
            for start in range(0, whole, self.batch_size):
                if index >= skip_batches:
                    yield self._batch(arrays, start, start + self.batch_size)
                index += 1
            carry = tuple(_rows(a, whole, len(arrays[0])) for a in arrays)
        if carry is not None and len(carry[0]) and index >= skip_batches:
            yield self._batch(carry, 0, len(carry[0]))

    def _batch(self, arrays: tuple[Part, ...], start: int, stop: int) -> Batch:
        label, dense, categorical, *lists = (_rows(a, start, stop) for a in arrays)
        return Batch(
            torch.from_numpy(np.ascontiguousarray(dense)),
            KeyedIds(tuple(self.categorical), torch.from_numpy(np.ascontiguousarray(categorical))),
            {
                name: JaggedIds(torch.from_numpy(np.ascontiguousarray(j.values)), torch.from_numpy(j.offsets))
                for name, j in zip(self.lists, lists)
            },
            torch.from_numpy(np.array(label)),  # a copy: the label column's Arrow buffer is read-only
            torch.ones(len(label)),
        )


def _stacked(columns: dict, names: list[str], dtype: type, rows: int) -> np.ndarray:
    """The named columns side by side as a [rows, len(names)] array of `dtype`."""
    if not names:
        return np.zeros((rows, 0), dtype=dtype)
    return np.stack([columns[c] for c in names], axis=1).astype(dtype, copy=False)
