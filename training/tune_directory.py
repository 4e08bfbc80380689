"""The folder of one hyperparameter search (sparkrec tune) and the config it hands to sparkrec train.

    <tune-dir>/study.journal     Optuna's journal: every trial's parameters, state and score
    <tune-dir>/trials/<n>/       trial n's run directory (training/run_directory.py)
    <tune-dir>/config.json       the best trial's model and train options (TunedConfig)
    <tune-dir>/tune.json         the search's report; tune.png beside it: each trial's score

A local (or mounted, e.g. /dbfs) folder: Optuna locks the journal file while it writes."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from rec_plugin.errors import InputError
from rec_plugin.json_files import write_json


@dataclass(frozen=True)
class TunedConfig:
    """What a search found: the model and the options of `sparkrec train` (learning rates, widths,
    layer sizes as tuples, and the epochs, seed, backend and workers its trials trained with)."""

    model: str
    options: dict

    def save(self, path: str | os.PathLike) -> None:
        write_json(Path(path), asdict(self))

    @classmethod
    def load(cls, path: str | os.PathLike) -> TunedConfig:
        try:
            values = json.loads(Path(path).read_text())
            options = {k: tuple(v) if isinstance(v, list) else v for k, v in values["options"].items()}
            return cls(str(values["model"]), options)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise InputError(f"config {path} is not a config sparkrec tune wrote ({error})") from None


class TuneDirectory:
    def __init__(self, location: str | os.PathLike) -> None:
        self.path = Path(location)

    @property
    def journal(self) -> Path:
        return self.path / "study.journal"

    def trial_run_dir(self, number: int) -> str:
        """A trial's run directory as a `file:` URI: the tune folder is local (or mounted), which a
        bare path would not say on a cluster whose default filesystem is another (HDFS)."""
        return f"file:{(self.path / 'trials' / str(number)).absolute()}"  # not %-quoted: a path as given

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def report(self) -> Path:
        return self.path / "tune.json"

    @property
    def plot(self) -> Path:
        return self.path / "tune.png"
