"""Triton model repositories in the standard layout: <repository>/<name>/config.pbtxt and one
directory per version, generated from the workflow's schema. Three flavours of the model from one
description of its tensors: `python` (the python backend: what runs here on CPU), and
`pytorch_libtorch` (TorchScript) and `onnxruntime` (ONNX) for the NVIDIA Triton container's backends
on GPU hosts (their configs are generated and checked; this machine's server has only the python
backend).

The model's tensors come from the schema (model_inputs): DENSE FP32 [n_continuous], CATEGORICAL INT64
[n_categorical], and per list feature i LIST_<i> INT64 [max_length] padded with 0 and
LIST_<i>_LENGTHS INT64 [1]; a group the schema lacks has no tensor. Each version folder keeps its
layout in model_inputs.json (what the python backend model reads). One config serves every version
of a model, so a version whose layout differs from the served one is refused: serve it under
another name.

An ensemble serves raw rows. Triton pins the version of each step in the ensemble's one config, so a
single ensemble cannot route per version: every version k gets its own ensemble <name>_v<k>
(<name>_preprocess version k, the preprocessing of the workflow model k was trained with, then
<name>_model version k), and <name> is the newest of them. Pushing version k + 1 never rewrites what
<name>_v<k> computes. Each ensemble's config carries its raw inputs (RawSpec) as the parameter
raw_spec, which clients read to build requests from raw rows, and the names of the model inputs it
makes (by group, in the model's order) as the parameter features: which raw column is NCF's user.

A recommender (Mult-VAE's TopKRecommender) outputs ITEM_IDS INT64 [K] and SCORES FP32 [K] per row
(top_k_outputs; K fixed at export, best first) instead of PROBABILITY. Its ensemble adds a third
step, <name>_postprocess version k: the ids back to the raw items ITEMS BYTES [K], by the vocabulary
of the list the model takes (the one in preprocess version k). The ids map back outside the model so
that a model version stays a pure function of ids, the one the in-process model is compared to, and
the vocabulary lives with the preprocessing it comes from. The ensemble outputs all three.
"""

from __future__ import annotations

import fcntl
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from rec_plugin.errors import InputError
from rec_plugin.json_files import write_text
from rec_plugin.schema import Schema
from serving.preprocessor import (
    CATEGORICAL,
    DENSE,
    EXPRESSIONS,
    ITEM_IDS,
    ITEMS,
    SCORES,
    VOCABULARY_FILE,
    RawSpec,
    lengths_of,
    list_output,
)
from training.run_directory import RunDirectory, RunLocation

PYTHON_MODEL = Path(__file__).with_name("triton_python_model.py")
PREPROCESS_MODEL = Path(__file__).with_name("triton_preprocess_model.py")
FLAVOURS = ("python", "pytorch_libtorch", "onnxruntime")
# Each flavour's backend (or platform) and the file its version folders hold.
_KIND = {
    "python": 'backend: "python"',
    "pytorch_libtorch": 'platform: "pytorch_libtorch"',
    "onnxruntime": 'platform: "onnxruntime_onnx"',
}
_ENSEMBLE_KIND = 'platform: "ensemble"'
# What each kind of config serves, in the words of a refusal.
_KIND_SERVES = {
    _KIND["python"]: "a python-backend model",
    _KIND["pytorch_libtorch"]: "a libtorch model",
    _KIND["onnxruntime"]: "an ONNX model",
    _ENSEMBLE_KIND: "an ensemble with its preprocessing (an export with --workflow)",
}
MODEL_FILE = {"python": "model.pt", "pytorch_libtorch": "model.pt", "onnxruntime": "model.onnx"}
# The name a model is served under unless given another (a click model's: click-through rate).
DEFAULT_NAME = "ctr"
MODEL_INPUTS_FILE = "model_inputs.json"
MODEL_OUTPUTS_FILE = "model_outputs.json"
# The workflow output schema a version was trained on: which workflow version featurizes its inputs.
TRAINED_SCHEMA_FILE = "trained_schema.json"
# The run directory (its URI) a version holds, written with the version: what finds a run exported.
EXPORTED_RUN_FILE = "run_dir.txt"
POSTPROCESS_MODEL = Path(__file__).with_name("triton_postprocess_model.py")
RAW_SPEC_PARAMETER = "raw_spec"
FEATURES_PARAMETER = "features"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    dims: tuple[int, ...]

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "dims": list(self.dims)}

    @classmethod
    def from_dict(cls, data: dict) -> TensorSpec:
        return cls(data["name"], data["dtype"], tuple(data["dims"]))


# The two fixed-width feature tensors' names and types (their dims come from the schema: model_inputs).
INPUTS = (TensorSpec(DENSE, "TYPE_FP32", (-1,)), TensorSpec(CATEGORICAL, "TYPE_INT64", (-1,)))
OUTPUTS = (TensorSpec("PROBABILITY", "TYPE_FP32", (1,)),)


def top_k_outputs(k: int) -> tuple[TensorSpec, ...]:
    """A recommender's outputs: per row its top `k` item ids and their scores, best first."""
    if k < 1:
        raise InputError(f"a recommender serves at least its top 1 item, not top {k}")
    return TensorSpec(ITEM_IDS, "TYPE_INT64", (k,)), TensorSpec(SCORES, "TYPE_FP32", (k,))


def _item_tokens(outputs: tuple[TensorSpec, ...]) -> TensorSpec | None:
    """The raw items a postprocess step makes of a recommender's ids; None for other models."""
    ids = next((spec for spec in outputs if spec.name == ITEM_IDS), None)
    return None if ids is None else TensorSpec(ITEMS, "TYPE_STRING", ids.dims)


def model_inputs(schema: Schema) -> tuple[TensorSpec, ...]:
    """The model's input tensors for a workflow's output schema (see the module docstring)."""
    specs = []
    if len(schema.continuous):
        specs.append(TensorSpec(DENSE, "TYPE_FP32", (len(schema.continuous),)))
    if len(schema.categorical):
        specs.append(TensorSpec(CATEGORICAL, "TYPE_INT64", (len(schema.categorical),)))
    for i, column in enumerate(schema.lists):
        if not column.max_length:
            raise InputError(
                f"list feature {column.name!r} has no max_length in the schema: serving pads to it"
            )
        specs.append(TensorSpec(list_output(i), "TYPE_INT64", (int(column.max_length),)))
        specs.append(TensorSpec(lengths_of(list_output(i)), "TYPE_INT64", (1,)))
    return tuple(specs)


def raw_inputs(spec: RawSpec) -> tuple[TensorSpec, ...]:
    """The ensemble's (and the preprocess model's) raw input tensors."""
    return tuple(TensorSpec(name, dtype, dims) for name, dtype, dims in spec.tensors())


def ensemble_model_name(name: str) -> str:
    """The model that the ensemble `name` calls after its preprocessing."""
    return f"{name}_model"


def preprocess_model_name(name: str) -> str:
    return f"{name}_preprocess"


def postprocess_model_name(name: str) -> str:
    return f"{name}_postprocess"


def ensemble_version_name(name: str, version: int | str) -> str:
    """The ensemble that serves version `version` of `name` (its preprocessing and its model)."""
    return f"{name}_v{version}"


@contextmanager
def written_whole(repository: Path, name: str) -> Iterator[None]:
    """What the block writes under the served name `name` (a model version, its preprocess and
    postprocess versions, its ensembles, and the configs these rewrite) is undone if the block fails:
    an export refused or cut off midway leaves no half version for a server to load, and a rerun
    writes the same version again. One export of a name writes at a time (a lock file beside the
    models): another is refused in one line instead of writing into, or undoing, this one's."""
    repository = Path(repository)
    repository.mkdir(parents=True, exist_ok=True)
    with open(repository / f".{name}.export.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(
                f"another export of {name} is writing to {repository}: wait for it to end"
            ) from None
        with _undone_on_failure(repository, name):
            yield


@contextmanager
def _undone_on_failure(repository: Path, name: str) -> Iterator[None]:
    """written_whole's undo, under its lock."""
    models = [name, ensemble_model_name(name), preprocess_model_name(name), postprocess_model_name(name)]
    _remove_killed_exports(repository, name, models)
    configs = {m: repository / m / "config.pbtxt" for m in models}
    saved = {m: path.read_text() if path.is_file() else None for m, path in configs.items()}
    before = {m: set(_entries(repository / m)) for m in models}
    top = set(_entries(repository))
    try:
        yield
    except BaseException:
        new_versions = set()
        for m in models:
            for entry in set(_entries(repository / m)) - before[m]:
                new_versions |= {entry} if entry.isdigit() else set()
                shutil.rmtree(repository / m / entry, ignore_errors=True)
            now = configs[m].read_text() if configs[m].is_file() else None
            if now != saved[m] and saved[m] is not None:
                write_text(configs[m], saved[m])
            elif now != saved[m]:
                configs[m].unlink()
        ours = {*models, *(ensemble_version_name(name, v) for v in new_versions)}
        for entry in (set(_entries(repository)) - top) & ours:
            shutil.rmtree(repository / entry, ignore_errors=True)
        raise


def _remove_killed_exports(repository: Path, name: str, models: list[str]) -> None:
    """What an export killed midway left under `name`: staging folders, and versions of `name`_model
    whose ensemble `name`_v<N> (written last) is missing, with their preprocess and postprocess
    versions. Removed, so that the next export takes their number and no version policy loads a
    model version that nothing serves (under `latest 2` it would unload the previous served one)."""
    for model in models:
        for entry in _entries(repository / model):
            if entry.startswith(_WRITING):
                shutil.rmtree(repository / model / entry, ignore_errors=True)
    for version in versions(repository, ensemble_model_name(name)):
        if not (repository / ensemble_version_name(name, version) / "config.pbtxt").is_file():
            for model in models[1:]:
                shutil.rmtree(repository / model / str(version), ignore_errors=True)


def _entries(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir()] if folder.is_dir() else []


# The prefix of a version folder being written: not a number, so Triton ignores it until it is renamed.
_WRITING = ".writing-"


@contextmanager
def _version_folder(model_folder: Path, version: int) -> Iterator[Path]:
    """A folder to write version `version` of a model into, renamed to `version` once the block ends:
    a server sees the whole version or none, also after a kill midway (the next write of the version
    replaces what that left)."""
    staging = model_folder / f"{_WRITING}{version}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    final = model_folder / str(version)
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)


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


QUEUE_DELAY_US = 200


def _dynamic_batching(queue_delay_us: int) -> str:
    """Concurrent requests that arrive within `queue_delay_us` of the first run as one batch: a longer
    delay batches more under load and adds up to that much latency to a lone request."""
    return f"dynamic_batching {{ max_queue_delay_microseconds: {int(queue_delay_us)} }}"


ONE_CPU_INSTANCE = "instance_group [ { kind: KIND_CPU count: 1 } ]"


def _latest(versions_served: int) -> str:
    return f"version_policy: {{ latest: {{ num_versions: {versions_served} }} }}"


def _specific(keep: list[int]) -> str:
    return f"version_policy: {{ specific: {{ versions: [ {', '.join(map(str, keep))} ] }} }}"


def pin_versions(repository: Path, name: str, keep: list[int]) -> None:
    """Rewrites the version policy of `name`'s config to serve exactly the `keep` versions; the rest
    of the config (tensors, batching) stays as written."""
    path = repository / name / "config.pbtxt"
    lines = path.read_text().splitlines()
    policy = _specific(keep)
    kept = (policy if line.startswith("version_policy:") else line for line in lines)
    write_text(path, "\n".join(kept) + "\n")


def _require_served_as(repository: Path, name: str, kind: str) -> None:
    """Refuses a version of `name` of another kind than its config serves (a backend or platform, or
    an ensemble): the config serves every version, so the earlier ones would stop loading."""
    path = repository / name / "config.pbtxt"
    lines = path.read_text().splitlines() if path.is_file() else []
    served = next((line for line in lines if line in _KIND_SERVES), kind)
    if served != kind:
        raise InputError(
            f"{name} in {repository} serves {_KIND_SERVES[served]}, not {_KIND_SERVES[kind]}: a config "
            "serves all versions of a model, so export this one under another --name"
        )


def _serves_otherwise(served_config: Path, config: str) -> bool:
    """Whether the config on disk differs from `config` in more than the versions it serves (which
    pin_versions rewrites while a rollout serves two versions, then one)."""

    def kept(text: str) -> list[str]:
        return [line for line in text.splitlines() if not line.startswith("version_policy:")]

    return served_config.is_file() and kept(served_config.read_text()) != kept(config)


def config_pbtxt(
    name: str,
    flavour: str,
    inputs: Schema | tuple[TensorSpec, ...],
    versions_served: int = 2,
    queue_delay_us: int = QUEUE_DELAY_US,
    outputs: tuple[TensorSpec, ...] = OUTPUTS,
) -> str:
    """The model's config for its input tensors (or the schema they come from) and outputs: the newest
    `versions_served` versions stay loaded (two serve at once, for A/B; pin_versions picks others);
    dynamic batching groups concurrent requests."""
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown flavour {flavour!r}; choose one of {FLAVOURS}")
    specs = model_inputs(inputs) if isinstance(inputs, Schema) else tuple(inputs)
    instances = ONE_CPU_INSTANCE if flavour == "python" else ""
    policy = _latest(versions_served)
    batching = _dynamic_batching(queue_delay_us)
    return _config(name, _KIND[flavour], specs, outputs, flavour, policy, batching, instances)


def _step(model: str, version: int, inputs: dict[str, str], outputs: dict[str, str]) -> str:
    maps = [f'input_map {{ key: "{k}" value: "{v}" }}' for k, v in inputs.items()]
    maps += [f'output_map {{ key: "{k}" value: "{v}" }}' for k, v in outputs.items()]
    return f'    {{ model_name: "{model}" model_version: {version} {" ".join(maps)} }}'


def _string_parameter(key: str, value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'parameters {{ key: "{key}" value: {{ string_value: "{escaped}" }} }}'


def _json_parameter(key: str, value: dict) -> str:
    return _string_parameter(key, json.dumps(value, separators=(",", ":")))


def ensemble_pbtxt(
    name: str,
    base: str,
    version: int,
    raw: RawSpec,
    features: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...] = OUTPUTS,
    feature_names: dict[str, list[str]] | None = None,
) -> str:
    """The ensemble `name`: version `version` of `base`_preprocess (raw fields -> features), then the
    same version of `base`_model (features -> `outputs`), and for a recommender the same version of
    `base`_postprocess (item ids -> raw items); its raw inputs and the features' names (by group) as
    parameters."""
    mapped = {spec.name: f"features_{spec.name.lower()}" for spec in features}
    specs = raw_inputs(raw)
    steps = [
        _step(preprocess_model_name(base), version, {s.name: s.name for s in specs}, mapped),
        _step(ensemble_model_name(base), version, mapped, {s.name: s.name for s in outputs}),
    ]
    items = _item_tokens(outputs)
    if items is not None:
        steps.append(_step(postprocess_model_name(base), version, {ITEM_IDS: ITEM_IDS}, {ITEMS: ITEMS}))
        outputs = (*outputs, items)
    scheduling = "ensemble_scheduling {\n  step [\n" + ",\n".join(steps) + "\n  ]\n}"
    parameters = [_json_parameter(RAW_SPEC_PARAMETER, raw.to_dict())]
    if feature_names is not None:
        parameters.append(_json_parameter(FEATURES_PARAMETER, feature_names))
    return _config(name, _ENSEMBLE_KIND, specs, outputs, "python", scheduling, *parameters)


def postprocess_pbtxt(name: str, ids: TensorSpec, items: TensorSpec, versions_served: int = 2) -> str:
    """A recommender's postprocess model: its item ids -> the vocabulary's raw items."""
    policy = _latest(versions_served)
    kind = 'backend: "python"'
    return _config(name, kind, (ids,), (items,), "python", policy, ONE_CPU_INSTANCE)


def preprocess_pbtxt(
    name: str,
    raw: RawSpec,
    features: tuple[TensorSpec, ...],
    versions_served: int = 2,
    queue_delay_us: int = QUEUE_DELAY_US,
) -> str:
    kind = 'backend: "python"'
    policy, batching = _latest(versions_served), _dynamic_batching(queue_delay_us)
    return _config(name, kind, raw_inputs(raw), features, "python", policy, batching, ONE_CPU_INSTANCE)


def trained_schema(model_file: Path) -> Schema | None:
    """The schema the model version holding `model_file` was trained on; None for a version exported
    before versions kept it."""
    path = Path(model_file).parent / TRAINED_SCHEMA_FILE
    return Schema.from_json(path.read_text()) if path.is_file() else None


def _layout(folder: Path) -> tuple[TensorSpec, ...] | None:
    path = folder / MODEL_INPUTS_FILE
    return tuple(TensorSpec.from_dict(d) for d in json.loads(path.read_text())) if path.is_file() else None


def _outputs(folder: Path) -> tuple[TensorSpec, ...]:
    """A model version's outputs, recorded beside its inputs unless they are a click model's."""
    path = folder / MODEL_OUTPUTS_FILE
    return tuple(TensorSpec.from_dict(d) for d in json.loads(path.read_text())) if path.is_file() else OUTPUTS


def is_click_model(model_file: Path) -> bool:
    """Whether the model version holding `model_file` outputs click probabilities (a recommender
    outputs its top items instead)."""
    return _outputs(Path(model_file).parent) == OUTPUTS


def served_layout(repository: Path, name: str) -> tuple[TensorSpec, ...] | None:
    """The input tensors of the newest version of model `name` (None if it has none yet)."""
    found = versions(repository, name)
    return _layout(repository / name / str(found[-1])) if found else None


def _features_of(plan: dict) -> tuple[TensorSpec, ...]:
    """The model inputs a preprocess plan (preprocess.json) outputs."""
    outputs = plan["outputs"]
    specs = []
    if outputs["continuous"]:
        specs.append(TensorSpec(DENSE, "TYPE_FP32", (len(outputs["continuous"]),)))
    if outputs["categorical"]:
        specs.append(TensorSpec(CATEGORICAL, "TYPE_INT64", (len(outputs["categorical"]),)))
    lengths = {s["output"]: s["max_length"] for s in plan["steps"] if s["kind"] == "list"}
    for i, (_, output) in enumerate(outputs["lists"]):
        specs.append(TensorSpec(list_output(i), "TYPE_INT64", (int(lengths[output]),)))
        specs.append(TensorSpec(lengths_of(list_output(i)), "TYPE_INT64", (1,)))
    return tuple(specs)


def write_ensemble(
    repository: Path,
    name: str,
    preprocess: Path,
    version: int | None = None,
    queue_delay_us: int = QUEUE_DELAY_US,
) -> int:
    """Writes `preprocess` (serving/preprocess.py's export of the workflow model `version` was trained
    with; default the newest version of `name`_model) as version `version` of `name`_preprocess, the
    ensemble `name`_v<version> over both (and for a recommender version `version` of
    `name`_postprocess), and the ensemble `name` over the newest version; returns the version.
    Refuses preprocessing whose raw inputs or outputs differ from the served ones."""
    _require_served_as(repository, name, _ENSEMBLE_KIND)
    model = ensemble_model_name(name)
    version = version or (versions(repository, model) or [0])[-1]
    layout = _layout(repository / model / str(version))
    if layout is None:
        raise InputError(
            f"{model} has no version {version} with its inputs in {repository}: add_version first"
        )
    plan = json.loads((Path(preprocess) / EXPRESSIONS).read_text())
    raw, features = RawSpec.from_dict(plan["raw"]), _features_of(plan)
    if features != layout:
        raise InputError(
            f"the preprocessing outputs {[s.to_dict() for s in features]} but {model} version {version} "
            f"takes {[s.to_dict() for s in layout]}"
        )
    preprocess_name = preprocess_model_name(name)
    config = preprocess_pbtxt(preprocess_name, raw, features, queue_delay_us=queue_delay_us)
    served_config = repository / preprocess_name / "config.pbtxt"
    if _serves_otherwise(served_config, config):
        raise InputError(
            f"{preprocess_name} serves other raw inputs, features or batching than this workflow's: a "
            "config serves all versions of a model, so serve this one under another --name"
        )
    with _version_folder(repository / preprocess_name, version) as folder:
        shutil.copytree(preprocess, folder, dirs_exist_ok=True)
        shutil.copy2(PREPROCESS_MODEL, folder / "model.py")
    write_text(served_config, config)
    outputs = _outputs(repository / model / str(version))
    if _item_tokens(outputs) is not None:
        _write_postprocess(repository, name, version, plan, preprocess, outputs)
    ensembles = [ensemble_version_name(name, version)]
    newest = max(v for v in versions(repository, preprocess_name) if (repository / model / str(v)).is_dir())
    if version == newest:
        ensembles.append(name)
    for ensemble in ensembles:
        (repository / ensemble / "1").mkdir(parents=True, exist_ok=True)
        write_text(
            repository / ensemble / "config.pbtxt",
            ensemble_pbtxt(ensemble, name, version, raw, features, outputs, _feature_names(plan)),
        )
    return version


def _feature_names(plan: dict) -> dict[str, list[str]]:
    """The model inputs' names a preprocess plan makes, by group in the model's order."""
    return {group: [name for name, _ in outputs] for group, outputs in plan["outputs"].items()}


def _write_postprocess(
    repository: Path, name: str, version: int, plan: dict, preprocess: Path, outputs: tuple[TensorSpec, ...]
) -> None:
    """Version `version` of `name`_postprocess: the vocabulary of the one list the recommender takes
    (its ids index that list's vocabulary), copied from the preprocessing, read back by id."""
    tables = [step["table"] for step in plan["steps"] if step["kind"] == "list"]
    if len(tables) != 1:
        raise InputError(
            f"a recommender takes one list of items, whose vocabulary names its ids; this preprocessing "
            f"serves {len(tables)} lists"
        )
    ids = next(spec for spec in outputs if spec.name == ITEM_IDS)
    postprocess = postprocess_model_name(name)
    config = postprocess_pbtxt(postprocess, ids, _item_tokens(outputs))
    served_config = repository / postprocess / "config.pbtxt"
    if _serves_otherwise(served_config, config):
        raise InputError(
            f"{postprocess} serves another number of items than this model's {ids.dims[0]}: serve it "
            "under another --name"
        )
    with _version_folder(repository / postprocess, version) as folder:
        shutil.copy2(Path(preprocess) / tables[0], folder / VOCABULARY_FILE)
        shutil.copy2(POSTPROCESS_MODEL, folder / "model.py")
    write_text(served_config, config)


def versions(repository: Path, name: str) -> list[int]:
    folder = repository / name
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def exported_version(repository: Path, name: str, run: RunLocation) -> int | None:
    """The version of the ensemble `name` whose model holds `run`, if one was exported whole (an
    export killed before its ensemble was written is none: the next export removes it)."""
    model, uri = ensemble_model_name(name), RunDirectory.at(run).uri
    for version in versions(repository, model):
        marker = repository / model / str(version) / EXPORTED_RUN_FILE
        served = (repository / ensemble_version_name(name, version) / "config.pbtxt").is_file()
        if served and marker.is_file() and RunDirectory.at(marker.read_text()).uri == uri:
            return version
    return None


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
    schema: Schema | None = None,
    queue_delay_us: int = QUEUE_DELAY_US,
    outputs: tuple[TensorSpec, ...] = OUTPUTS,
    run: str | None = None,
) -> int:
    """Writes the model (TorchScript, or ONNX for `onnxruntime`) as the next version (N + 1) of `name`,
    with the flavour's config for the input tensors of `schema` (the workflow's output schema the
    model was trained on; default: the served versions' tensors), its `outputs` (a click model's
    PROBABILITY, or a recommender's top_k_outputs) and the URI of the `run` it comes from; returns
    N + 1."""
    _require_served_as(repository, name, _KIND[flavour])
    served = served_layout(repository, name)
    layout = model_inputs(schema) if schema is not None else served
    if layout is None:
        raise InputError(f"the first version of {name} needs the schema its model was trained on (schema=)")
    found = versions(repository, name)
    served_outputs = _outputs(repository / name / str(found[-1])) if found else outputs
    if served is not None and (layout, outputs) != (served, served_outputs):
        raise InputError(
            f"{name}'s served versions take {[s.to_dict() for s in served]} and give "
            f"{[s.to_dict() for s in served_outputs]}, this model {[s.to_dict() for s in layout]} and "
            f"{[s.to_dict() for s in outputs]}: a config serves all versions of a model, so serve it "
            "under another name"
        )
    version = (versions(repository, name) or [0])[-1] + 1
    with _version_folder(repository / name, version) as folder:
        model.save(str(folder / MODEL_FILE[flavour]))
        (folder / MODEL_INPUTS_FILE).write_text(json.dumps([s.to_dict() for s in layout], indent=1) + "\n")
        if schema is not None:
            (folder / TRAINED_SCHEMA_FILE).write_text(schema.to_json())
        if outputs != OUTPUTS:  # a version without the file is a click model's (_outputs)
            outputs_text = json.dumps([s.to_dict() for s in outputs], indent=1) + "\n"
            (folder / MODEL_OUTPUTS_FILE).write_text(outputs_text)
        if flavour == "python":
            shutil.copy2(PYTHON_MODEL, folder / "model.py")
        if run is not None:
            (folder / EXPORTED_RUN_FILE).write_text(run)
    config = config_pbtxt(name, flavour, layout, queue_delay_us=queue_delay_us, outputs=outputs)
    write_text(repository / name / "config.pbtxt", config)
    return version
