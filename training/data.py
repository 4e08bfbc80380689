"""The training loader: Petastorm over the featurized Delta files, sharded per rank, batched as tensors.

Two Petastorm faults are kept away from users. Its default thread pool races and sometimes ends an
epoch empty with no error, so the reader runs on the single-threaded `dummy` pool (parquet decoding
is multithreaded inside Arrow anyway) and every epoch's row count is checked against the Delta
table's. Its default torch DataLoader collates row by row, so batches are cut here from whole
row-group column arrays instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from petastorm import make_batch_reader

from rec_plugin.schema import CATEGORICAL, DENSE, LABEL

# Petastorm 0.12 calls pyarrow's legacy dataset API (the one pyarrow 14 keeps, with a warning per call).
warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm\.")


class Batch(NamedTuple):
    """One training batch; `weight` is 0 for the padding rows of a rank that ran out of data."""

    dense: torch.Tensor  # float32 [B, 13]
    categorical: torch.Tensor  # int64 [B, 26]
    label: torch.Tensor  # float32 [B]
    weight: torch.Tensor  # float32 [B]


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


class EpochRowCountError(RuntimeError):
    """An epoch read a different number of rows than the table holds: data would be silently lost."""


def check_epoch_rows(read: int, expected: int, what: str) -> None:
    if read != expected:
        raise EpochRowCountError(
            f"{what}: the epoch read {read:,} rows but the table holds {expected:,}; refusing to continue"
        )


def padding_batch(size: int) -> Batch:
    """A batch of weight 0: lets a rank whose shard is exhausted keep step with the others."""
    return Batch(
        torch.zeros(size, len(DENSE)),
        torch.zeros(size, len(CATEGORICAL), dtype=torch.int64),
        torch.zeros(size),
        torch.zeros(size),
    )


class BatchLoader:
    """Batches of one rank's shard of a FileSet, reshuffled every epoch from (seed, epoch).

    Row groups are assigned to ranks and ordered by Petastorm from the epoch's seed, then rows are
    shuffled within a buffer of `shuffle_rows` rows. The order is a pure function of (seed, epoch,
    rank, size), so a resumed run can skip exactly the batches it had already trained on."""

    def __init__(
        self,
        file_set: FileSet,
        batch_size: int,
        rank: int = 0,
        size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        shuffle_rows: int = 200_000,
    ) -> None:
        self.file_set, self.batch_size = file_set, batch_size
        self.rank, self.size, self.seed, self.shuffle = rank, size, seed, shuffle
        self.shuffle_rows = shuffle_rows
        self.rows_read = 0

    def _reader(self, epoch: int):  # noqa: ANN202 - petastorm's Reader
        return make_batch_reader(
            list(self.file_set.files),
            schema_fields=[LABEL, *DENSE, *CATEGORICAL],
            reader_pool_type="dummy",
            seed=self.seed * 100_003 + epoch,
            shuffle_row_groups=self.shuffle,
            num_epochs=1,
            cur_shard=self.rank if self.size > 1 else None,
            shard_count=self.size if self.size > 1 else None,
        )

    def _chunks(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(dense, categorical, label) arrays per row group, counted into rows_read."""
        with self._reader(epoch) as reader:
            for group in reader:
                columns = group._asdict()
                dense = np.stack([columns[c] for c in DENSE], axis=1).astype(np.float32, copy=False)
                categorical = np.stack([columns[c] for c in CATEGORICAL], axis=1).astype(np.int64)
                label = np.asarray(columns[LABEL], dtype=np.float32)
                self.rows_read += len(label)
                yield dense, categorical, label

    def _buffers(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Concatenated chunks of about shuffle_rows rows, each permuted when shuffling."""
        rng = np.random.default_rng([self.seed, epoch, self.rank])
        pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        pending_rows = 0

        def merged() -> tuple[np.ndarray, ...]:
            arrays = [np.concatenate(parts) for parts in zip(*pending)]
            order = rng.permutation(len(arrays[2])) if self.shuffle else slice(None)
            return tuple(a[order] for a in arrays)

        for chunk in self._chunks(epoch):
            pending.append(chunk)
            pending_rows += len(chunk[2])
            if pending_rows >= self.shuffle_rows:
                yield merged()
                pending, pending_rows = [], 0
        if pending:
            yield merged()

    def epoch(self, epoch: int, skip_batches: int = 0) -> Iterator[Batch]:
        """The epoch's batches (the last may be short), skipping the first `skip_batches`."""
        self.rows_read = 0
        carry: tuple[np.ndarray, ...] | None = None
        index = 0
        for arrays in self._buffers(epoch):
            if carry is not None:
                arrays = tuple(np.concatenate(pair) for pair in zip(carry, arrays))
            whole = len(arrays[2]) // self.batch_size * self.batch_size
            for start in range(0, whole, self.batch_size):
                if index >= skip_batches:
                    yield _batch(arrays, start, start + self.batch_size)
                index += 1
            carry = tuple(a[whole:] for a in arrays)
        if carry is not None and len(carry[2]) and index >= skip_batches:
            yield _batch(carry, 0, len(carry[2]))


def _batch(arrays: tuple[np.ndarray, ...], start: int, stop: int) -> Batch:
    dense, categorical, label = (torch.from_numpy(np.ascontiguousarray(a[start:stop])) for a in arrays)
    return Batch(dense, categorical, label, torch.ones(len(label)))
