"""The run directory: every file a training run writes and later stages read, on any filesystem.

A run lives at a path or URI (`runs/dlrm`, `/abs/runs/dlrm`, `file:///abs/runs/dlrm`, Hadoop's
`file:/abs/runs/dlrm`, `s3://bucket/runs/dlrm`). Training workers are plain Python processes without
a JVM, so Hadoop's FileSystem is out of their reach: files go through fsspec (installed with
Petastorm and torch), which reads local disks and, with its package for the scheme (s3fs, gcsfs,
...), object stores. This module alone names the files inside a run directory.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO
from urllib.parse import urlsplit

import fsspec
import torch

from rec_plugin.errors import InputError
from rec_plugin.schema import Schema
from training.models import ModelConfig

_MODEL_CONFIG = "model_config.json"
_SPEC = "spec.json"
_SCHEMA = "schema.json"
_WEIGHTS = "model.pt"
_METRICS = "metrics.json"
_LOSS_PLOT = "loss.png"
_AUC_PLOT = "auc_per_day.png"
_RANKING_PLOT = "ranking.png"
_CHECKPOINTS = "checkpoints"
_LATEST_CHECKPOINT = "latest.json"
_CHECKPOINT_PREFIX = "step-"
_EPOCH_STATE_PREFIX = "epoch-"
_PRETRAINED = "pretrained"


def _qualified_uri(location: str | os.PathLike) -> str:
    """One spelling per place: local paths and `file:` URIs (Hadoop writes `file:/abs`) become
    `file:///abs`, relative paths absolute; other URIs are kept as they are."""
    text = os.fspath(location)
    parts = urlsplit(text)
    if parts.scheme == "file":
        text = parts.path
    elif parts.scheme:
        return text.rstrip("/")
    return "file://" + os.path.abspath(text)


class RunDirectory:
    """A training run's folder: its model description, spec, weights, metrics, plots and checkpoints."""

    def __init__(self, location: str | os.PathLike) -> None:
        self.uri = _qualified_uri(location)
        self._fs, self._root = fsspec.core.url_to_fs(self.uri)

    @classmethod
    def at(cls, location: RunLocation) -> RunDirectory:
        """The run directory a caller named by path, URI or RunDirectory."""
        return location if isinstance(location, RunDirectory) else cls(location)

    def __repr__(self) -> str:
        return f"RunDirectory({self.uri!r})"

    def pretrained(self, part: str) -> RunDirectory:
        """The run directory, inside this one, of a part this run's model starts from (NeuMF: its
        "gmf" and "mlp" towers trained alone, and "neumf", which holds only their fused weights)."""
        return RunDirectory(posixpath.join(self.uri, _PRETRAINED, part))

    def write_model_config(self, config: ModelConfig) -> None:
        self._write_json(config.to_dict(), _MODEL_CONFIG)

    def model_config(self) -> ModelConfig:
        """The model class and sizes the weights belong to."""
        return ModelConfig.from_dict(json.loads(self._fs.cat_file(self._trained(_MODEL_CONFIG))))

    def write_spec(self, spec: dict) -> None:
        """The TrainSpec as plain data, which standalone launchers start workers from."""
        self._write_json(spec, _SPEC)

    def spec(self) -> dict:
        return json.loads(self._fs.cat_file(self._file(_SPEC)))

    def write_schema(self, schema: Schema) -> None:
        """The features schema the weights were trained on (what the model's preprocessing must give)."""
        self._replace(schema.to_json().encode(), _SCHEMA)

    def schema(self) -> Schema:
        return Schema.from_json(self._fs.cat_file(self._trained(_SCHEMA)).decode())

    def save_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """The final model's state dict (tensors only: it loads with weights_only=True)."""
        with self._writing(_WEIGHTS) as stream:
            torch.save(weights, stream)

    def weights(self) -> dict[str, torch.Tensor]:
        with self._fs.open(self._trained(_WEIGHTS), "rb") as stream:
            return torch.load(stream, map_location="cpu", weights_only=True)

    def write_metrics(self, metrics: dict) -> None:
        """Written last: a run directory with metrics holds a finished run."""
        self._write_bytes((json.dumps(metrics, indent=2) + "\n").encode(), _METRICS)

    def metrics(self) -> dict | None:
        """The finished run's metrics; None while the run has not finished."""
        path = self._file(_METRICS)
        return json.loads(self._fs.cat_file(path)) if self._fs.exists(path) else None

    def write_loss_plot(self, png: bytes) -> None:
        self._write_bytes(png, _LOSS_PLOT)

    def loss_plot(self) -> bytes:
        return self._fs.cat_file(self._file(_LOSS_PLOT))

    def write_auc_plot(self, png: bytes) -> None:
        self._write_bytes(png, _AUC_PLOT)

    def auc_plot(self) -> bytes:
        return self._fs.cat_file(self._file(_AUC_PLOT))

    def write_ranking_plot(self, png: bytes) -> None:
        """A ranking model's metrics beside the oracle's and popularity's."""
        self._write_bytes(png, _RANKING_PLOT)

    def ranking_plot(self) -> bytes:
        return self._fs.cat_file(self._file(_RANKING_PLOT))

    def clear_finished_mark(self) -> None:
        """Removes the metrics, a finished run's mark: a resumed run is unfinished until it ends."""
        if self._fs.exists(self._file(_METRICS)):
            self._fs.rm(self._file(_METRICS))

    def clear(self) -> None:
        """Removes what an earlier run in this folder trained, so that a fresh run never resumes from
        its checkpoints and, until it finishes, never looks finished with its results: the metrics
        (the finished run's mark) go first."""
        for name in (_METRICS, _WEIGHTS, _SCHEMA, _LOSS_PLOT, _AUC_PLOT, _RANKING_PLOT, _CHECKPOINTS):
            path = self._file(name)
            if self._fs.exists(path):
                self._fs.rm(path, recursive=True)

    def save_checkpoint(self, state: dict, step: int, keep: int = 2) -> str:
        """Writes the checkpoint of `step` under its own final name, then points the latest pointer at
        it, then keeps it and the `keep - 1` newest before it; returns its name.

        Object stores have no atomic rename, so nothing is renamed into place: until the small
        pointer is written, readers keep finding the previous complete checkpoint. A later step's
        file left half-written by a killed run is not counted; the resumed run overwrites it."""
        name = self._checkpoint_name(step)
        with self._writing(_CHECKPOINTS, name) as stream:
            torch.save(state, stream)
        self._replace(json.dumps({"checkpoint": name}).encode(), _CHECKPOINTS, _LATEST_CHECKPOINT)
        saved = self._fs.glob(self._file(_CHECKPOINTS, f"{_CHECKPOINT_PREFIX}*.pt"))
        older = sorted(path for path in saved if posixpath.basename(path) < name)
        for old in older[: max(0, len(older) - (keep - 1))]:
            self._fs.rm(old)
        return name

    def save_epoch_state(self, epoch: int, state: dict) -> None:
        """The model and optimizer states at the end of `epoch`, kept while it is the run's best on
        validation. Each epoch's under its own name: the checkpoint that names the best epoch never
        points at another's."""
        with self._writing(_CHECKPOINTS, self._epoch_state_name(epoch)) as stream:
            torch.save(state, stream)

    def epoch_state(self, epoch: int) -> dict:
        with self._fs.open(self._file(_CHECKPOINTS, self._epoch_state_name(epoch)), "rb") as stream:
            return torch.load(stream, map_location="cpu", weights_only=True)

    def keep_epoch_state(self, epoch: int) -> None:
        """Removes every epoch's state but `epoch`'s."""
        kept = self._file(_CHECKPOINTS, self._epoch_state_name(epoch))
        for path in self._fs.glob(self._file(_CHECKPOINTS, f"{_EPOCH_STATE_PREFIX}*.pt")):
            if path != kept:
                self._fs.rm(path)

    @staticmethod
    def _epoch_state_name(epoch: int) -> str:
        return f"{_EPOCH_STATE_PREFIX}{epoch:04d}.pt"

    def _checkpoint_name(self, step: int) -> str:
        """`step-<step>-<k>.pt`, k counting the saves of that step: a step saved again (the end of a
        run that had just saved it) gets a new file, never the one the latest pointer names."""
        saved = self._fs.glob(self._file(_CHECKPOINTS, f"{_CHECKPOINT_PREFIX}{step:08d}-*.pt"))
        return f"{_CHECKPOINT_PREFIX}{step:08d}-{len(saved):02d}.pt"

    def latest_checkpoint(self) -> str | None:
        """The newest complete checkpoint's name; None before the first."""
        pointer = self._file(_CHECKPOINTS, _LATEST_CHECKPOINT)
        return json.loads(self._fs.cat_file(pointer))["checkpoint"] if self._fs.exists(pointer) else None

    def load_checkpoint(self, name: str) -> dict:
        with self._fs.open(self._file(_CHECKPOINTS, name), "rb") as stream:
            return torch.load(stream, map_location="cpu", weights_only=True)

    def _file(self, *parts: str) -> str:
        return posixpath.join(self._root, *parts)

    def _trained(self, name: str) -> str:
        """The path of a file that only a trained run has; a user's error (a wrong or unfinished run
        directory) when it is missing."""
        path = self._file(name)
        if not self._fs.exists(path):
            raise InputError(
                f"run directory {self.uri} holds no trained model: train into it first "
                "(sparkrec train --run-dir) or fix the run directory"
            )
        return path

    @contextmanager
    def _writing(self, *parts: str) -> Iterator[IO[bytes]]:
        path = self._file(*parts)
        self._fs.makedirs(posixpath.dirname(path), exist_ok=True)
        with self._fs.open(path, "wb") as stream:
            yield stream

    def _write_bytes(self, data: bytes, *parts: str) -> None:
        with self._writing(*parts) as stream:
            stream.write(data)

    def _write_json(self, data: dict, *parts: str) -> None:
        self._write_bytes(json.dumps(data, indent=2).encode(), *parts)

    def _replace(self, data: bytes, *parts: str) -> None:
        """Writes a small file so that readers see the old or the new one whole: renamed into place
        on a local disk; on object stores the move is a copy, which is whole on arrival too."""
        temporary = parts[:-1] + (parts[-1] + ".tmp",)
        self._write_bytes(data, *temporary)
        self._fs.mv(self._file(*temporary), self._file(*parts))


RunLocation = RunDirectory | str | os.PathLike
