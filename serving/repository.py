"""Triton model repositories in the standard layout: <repository>/<name>/config.pbtxt and one
directory per version. Three flavours from one description of the model's tensors: `python` (the
python backend: what runs here on CPU), and `pytorch_libtorch` (TorchScript) and `onnxruntime`
(ONNX) for the NVIDIA Triton container's backends on GPU hosts (their configs are generated and
checked; this machine's server has only the python backend).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from rec_plugin.errors import InputError
from rec_plugin.schema import CATEGORICAL, DENSE
from serving.tokens import TOKEN_BYTES

PYTHON_MODEL = Path(__file__).with_name("triton_python_model.py")
PREPROCESS_MODEL = Path(__file__).with_name("triton_preprocess_model.py")
FLAVOURS = ("python", "pytorch_libtorch", "onnxruntime")
# Each flavour's backend (or platform) and the file its version folders hold.
_KIND = {
    "python": 'backend: "python"',
    "pytorch_libtorch": 'platform: "pytorch_libtorch"',
    "onnxruntime": 'platform: "onnxruntime_onnx"',
}
MODEL_FILE = {"python": "model.pt", "pytorch_libtorch": "model.pt", "onnxruntime": "model.onnx"}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    dims: tuple[int, ...]


# The served model's interface: the same tensors for every flavour (libtorch names them by position).
INPUTS = (
    TensorSpec("DENSE", "TYPE_FP32", (len(DENSE),)),
    TensorSpec("CATEGORICAL", "TYPE_INT64", (len(CATEGORICAL),)),
)
OUTPUTS = (TensorSpec("PROBABILITY", "TYPE_FP32", (1,)),)
# The ensemble's raw Criteo fields: dense counts as float64 (NaN = missing), category tokens as their
# bytes, zero-padded (all zero = missing; serving/tokens.py).
RAW_INPUTS = (
    TensorSpec("RAW_DENSE", "TYPE_FP64", (len(DENSE),)),
    TensorSpec("RAW_CATEGORICAL", "TYPE_UINT8", (len(CATEGORICAL), TOKEN_BYTES)),
)


def ensemble_model_name(name: str) -> str:
    """The model that the ensemble `name` calls after its preprocessing."""
    return f"{name}_model"


def _tensors(kind: str, specs: tuple[TensorSpec, ...], flavour: str) -> str:
    entries = []
    for index, spec in enumerate(specs):
        positional = f"{'INPUT' if kind == 'input' else 'OUTPUT'}__{index}"
        name = positional if flavour == "pytorch_libtorch" else spec.name
        entries.append(
            f'  {{ name: "{name}" data_type: {spec.dtype} dims: [ {", ".join(map(str, spec.dims))} ] }}'
        )
    return f"{kind} [\n" + ",\n".join(entries) + "\n]"


def _config(
    name: str, kind: str, inputs: tuple, outputs: tuple, flavour: str, *extra: str, batch: int = 65536
) -> str:
    """A config.pbtxt: name, backend or platform, batching limit, tensors, then any further blocks."""
    lines = [f'name: "{name}"', kind, f"max_batch_size: {batch}"]
    lines += [_tensors("input", inputs, flavour), _tensors("output", outputs, flavour), *extra]
    return "\n".join(line for line in lines if line) + "\n"


DYNAMIC_BATCHING = "dynamic_batching { max_queue_delay_microseconds: 200 }"
ONE_CPU_INSTANCE = "instance_group [ { kind: KIND_CPU count: 1 } ]"


def config_pbtxt(
    name: str, flavour: str, versions_served: int = 2, only_versions: list[int] | None = None
) -> str:
    """The model's config: the newest `versions_served` versions stay loaded (two serve at once, for
    A/B), or exactly `only_versions`; dynamic batching groups concurrent requests."""
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown flavour {flavour!r}; choose one of {FLAVOURS}")
    if only_versions:
        policy = f"version_policy: {{ specific: {{ versions: [ {', '.join(map(str, only_versions))} ] }} }}"
    else:
        policy = f"version_policy: {{ latest: {{ num_versions: {versions_served} }} }}"
    instances = ONE_CPU_INSTANCE if flavour == "python" else ""
    return _config(name, _KIND[flavour], INPUTS, OUTPUTS, flavour, policy, DYNAMIC_BATCHING, instances)


def _step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> str:
    maps = [f'input_map {{ key: "{k}" value: "{v}" }}' for k, v in inputs.items()]
    maps += [f'output_map {{ key: "{k}" value: "{v}" }}' for k, v in outputs.items()]
    return f'    {{ model_name: "{model}" model_version: -1 {" ".join(maps)} }}'


def ensemble_pbtxt(name: str) -> str:
    """`name` = `name`_preprocess (raw fields -> features) then `name`_model (features -> probability),
    each step on its newest loaded version."""
    features = {spec.name: f"features_{spec.name.lower()}" for spec in INPUTS}
    steps = [
        _step(f"{name}_preprocess", {s.name: s.name for s in RAW_INPUTS}, features),
        _step(ensemble_model_name(name), features, {s.name: s.name for s in OUTPUTS}),
    ]
    scheduling = "ensemble_scheduling {\n  step [\n" + ",\n".join(steps) + "\n  ]\n}"
    return _config(name, 'platform: "ensemble"', RAW_INPUTS, OUTPUTS, "python", scheduling)


def preprocess_pbtxt(name: str) -> str:
    kind = 'backend: "python"'
    return _config(name, kind, RAW_INPUTS, INPUTS, "python", DYNAMIC_BATCHING, ONE_CPU_INSTANCE)


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


def torchscript_file(repository: Path, name: str, version: int | None = None) -> Path:
    """The TorchScript file of `version` (default: the newest) of model `name`, or of the model
    `<name>_model` that the ensemble `name` serves; what in-process scoring loads."""
    for model in (name, ensemble_model_name(name)):
        found = versions(repository, model)
        chosen = found[-1] if version is None and found else version
        path = repository / model / str(chosen) / MODEL_FILE["python"]
        if path.is_file():
            return path
    wanted = "any version" if version is None else f"version {version}"
    raise InputError(f"no TorchScript model {name} ({wanted}) in the model repository {repository}")


def add_version(
    repository: Path,
    name: str,
    model: torch.jit.ScriptModule | torch.onnx.ONNXProgram,
    flavour: str = "python",
) -> int:
    """Writes the model (TorchScript, or ONNX for `onnxruntime`) as the next version (N + 1) of `name`,
    with the flavour's config; returns N + 1."""
    version = (versions(repository, name) or [0])[-1] + 1
    folder = repository / name / str(version)
    folder.mkdir(parents=True)
    model.save(str(folder / MODEL_FILE[flavour]))
    if flavour == "python":
        shutil.copy2(PYTHON_MODEL, folder / "model.py")
    (repository / name / "config.pbtxt").write_text(config_pbtxt(name, flavour))
    return version
