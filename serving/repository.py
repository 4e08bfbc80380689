"""Triton model repositories in the standard layout: <repository>/<name>/config.pbtxt and one
directory per version. Two flavours from one description of the model's tensors: `python` (the
python backend: what runs here on CPU) and `pytorch_libtorch` (the NVIDIA Triton container's
libtorch backend on GPU hosts; its config is generated and checked, it cannot run here).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from rec_plugin.schema import CATEGORICAL, DENSE

PYTHON_MODEL = Path(__file__).with_name("triton_python_model.py")
PREPROCESS_MODEL = Path(__file__).with_name("triton_preprocess_model.py")
FLAVOURS = ("python", "pytorch_libtorch")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    width: int


# The served model's interface: the same tensors for both flavours (libtorch names them by position).
INPUTS = (
    TensorSpec("DENSE", "TYPE_FP32", len(DENSE)),
    TensorSpec("CATEGORICAL", "TYPE_INT64", len(CATEGORICAL)),
)
OUTPUTS = (TensorSpec("PROBABILITY", "TYPE_FP32", 1),)
# The ensemble's raw Criteo fields: dense counts as float64 (NaN = missing), categories as bytes
# (empty = missing).
RAW_INPUTS = (
    TensorSpec("RAW_DENSE", "TYPE_FP64", len(DENSE)),
    TensorSpec("RAW_CATEGORICAL", "TYPE_STRING", len(CATEGORICAL)),
)


def _tensors(kind: str, specs: tuple[TensorSpec, ...], flavour: str) -> str:
    entries = []
    for index, spec in enumerate(specs):
        name = spec.name if flavour == "python" else f"{'INPUT' if kind == 'input' else 'OUTPUT'}__{index}"
        entries.append(f'  {{ name: "{name}" data_type: {spec.dtype} dims: [ {spec.width} ] }}')
    return f"{kind} [\n" + ",\n".join(entries) + "\n]"


def config_pbtxt(
    name: str,
    flavour: str,
    max_batch_size: int = 65536,
    versions_served: int = 2,
    only_versions: list[int] | None = None,
) -> str:
    """config.pbtxt: the newest `versions_served` versions stay loaded (two serve at once, for A/B),
    or exactly `only_versions`; dynamic batching groups concurrent requests."""
    pinned = ", ".join(map(str, only_versions or []))
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown flavour {flavour!r}; choose one of {FLAVOURS}")
    backend = 'backend: "python"' if flavour == "python" else 'platform: "pytorch_libtorch"'
    return (
        "\n".join(
            [
                f'name: "{name}"',
                backend,
                f"max_batch_size: {max_batch_size}",
                _tensors("input", INPUTS, flavour),
                _tensors("output", OUTPUTS, flavour),
                (
                    f"version_policy: {{ specific: {{ versions: [ {pinned} ] }} }}"
                    if only_versions
                    else f"version_policy: {{ latest: {{ num_versions: {versions_served} }} }}"
                ),
                "dynamic_batching { max_queue_delay_microseconds: 200 }",
                "instance_group [ { kind: KIND_CPU count: 1 } ]" if flavour == "python" else "",
            ]
        ).strip()
        + "\n"
    )


def _step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> str:
    maps = [f'input_map {{ key: "{k}" value: "{v}" }}' for k, v in inputs.items()]
    maps += [f'output_map {{ key: "{k}" value: "{v}" }}' for k, v in outputs.items()]
    return f'    {{ model_name: "{model}" model_version: -1 {" ".join(maps)} }}'


def ensemble_pbtxt(name: str, max_batch_size: int = 65536) -> str:
    """`name` = `name`_preprocess (raw fields -> features) then `name`_model (features -> probability),
    each step on its newest loaded version."""
    features = {spec.name: f"features_{spec.name.lower()}" for spec in INPUTS}
    steps = [
        _step(f"{name}_preprocess", {s.name: s.name for s in RAW_INPUTS}, features),
        _step(f"{name}_model", features, {s.name: s.name for s in OUTPUTS}),
    ]
    return (
        "\n".join(
            [
                f'name: "{name}"',
                'platform: "ensemble"',
                f"max_batch_size: {max_batch_size}",
                _tensors("input", RAW_INPUTS, "python"),
                _tensors("output", OUTPUTS, "python"),
                "ensemble_scheduling {\n  step [\n" + ",\n".join(steps) + "\n  ]\n}",
            ]
        )
        + "\n"
    )


def preprocess_pbtxt(name: str, max_batch_size: int = 65536) -> str:
    return (
        "\n".join(
            [
                f'name: "{name}"',
                'backend: "python"',
                f"max_batch_size: {max_batch_size}",
                _tensors("input", RAW_INPUTS, "python"),
                _tensors("output", INPUTS, "python"),
                "dynamic_batching { max_queue_delay_microseconds: 200 }",
                "instance_group [ { kind: KIND_CPU count: 1 } ]",
            ]
        )
        + "\n"
    )


def write_ensemble(repository: Path, name: str, preprocess: Path) -> None:
    """Writes `name`_preprocess (version 1: the exported workflow of serving/preprocess.py) and the
    ensemble `name`; the model itself goes to `name`_model with add_version."""
    folder = repository / f"{name}_preprocess" / "1"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(preprocess, folder)
    shutil.copy2(PREPROCESS_MODEL, folder / "model.py")
    (folder.parent / "config.pbtxt").write_text(preprocess_pbtxt(f"{name}_preprocess"))
    (repository / name / "1").mkdir(parents=True, exist_ok=True)
    (repository / name / "config.pbtxt").write_text(ensemble_pbtxt(name))


def versions(repository: Path, name: str) -> list[int]:
    folder = repository / name
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def add_version(repository: Path, name: str, model: torch.jit.ScriptModule, flavour: str = "python") -> int:
    """Writes the model as the next version (N + 1) of `name`, with the flavour's config; returns N + 1."""
    version = (versions(repository, name) or [0])[-1] + 1
    folder = repository / name / str(version)
    folder.mkdir(parents=True)
    model.save(str(folder / "model.pt"))
    if flavour == "python":
        shutil.copy2(PYTHON_MODEL, folder / "model.py")
    (repository / name / "config.pbtxt").write_text(config_pbtxt(name, flavour))
    return version
