"""Client helpers over tritonclient: inference on the served click model, raw rows through an
ensemble (requests built by the schema: the ensemble's config names its raw inputs), the two
collaborative-filtering ensembles (NCF: one user's scores for candidate items; Mult-VAE: the top items
for users' recent items). Routing traffic between versions is serving/rollout.py's."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import np_to_triton_dtype

from rec_plugin.errors import InputError
from serving.preprocessor import (
    CATEGORICAL,
    DENSE,
    ITEM_IDS,
    ITEMS,
    SCORES,
    RawBatch,
    RawSpec,
    lengths_of,
    list_output,
    padded,
)
from serving.repository import (
    FEATURES_PARAMETER,
    OUTPUTS,
    RAW_SPEC_PARAMETER,
    ensemble_version_name,
)

Client = triton_http.InferenceServerClient | triton_grpc.InferenceServerClient


def _protocol(client: Client):  # noqa: ANN202 - the tritonclient module of the client's protocol
    return triton_grpc if isinstance(client, triton_grpc.InferenceServerClient) else triton_http


def _inputs(client: Client, tensors: dict[str, np.ndarray]) -> list:
    protocol = _protocol(client)
    inputs = []
    for name, values in tensors.items():
        tensor = protocol.InferInput(name, list(values.shape), np_to_triton_dtype(values.dtype))
        tensor.set_data_from_numpy(values)
        inputs.append(tensor)
    return inputs


def feature_tensors(
    dense: np.ndarray,
    ids: np.ndarray,
    list_values: list[np.ndarray] = (),
    list_offsets: list[np.ndarray] = (),
    widths: list[int] = (),
) -> dict[str, np.ndarray]:
    """The model's input tensors from its features (lists padded to `widths`); empty groups omitted."""
    tensors = {}
    if dense.shape[1]:
        tensors[DENSE] = np.ascontiguousarray(dense, np.float32)
    if ids.shape[1]:
        tensors[CATEGORICAL] = np.ascontiguousarray(ids, np.int64)
    for i, (values, offsets) in enumerate(zip(list_values, list_offsets)):
        tensors[list_output(i)], tensors[lengths_of(list_output(i))] = padded(values, offsets, widths[i])
    return tensors


def predict(
    client: Client,
    name: str,
    dense: np.ndarray,
    categorical: np.ndarray,
    version: str = "",
    list_values: list[np.ndarray] = (),
    list_offsets: list[np.ndarray] = (),
    widths: list[int] = (),
) -> np.ndarray:
    """Click probabilities [B, 1] from one model version ("" = the newest loaded), given its features."""
    tensors = feature_tensors(dense, categorical, list_values, list_offsets, widths)
    return client.infer(name, _inputs(client, tensors), model_version=version).as_numpy(OUTPUTS[0].name)


def _parameter(client: Client, name: str, key: str) -> dict:
    """A JSON parameter of model `name`'s config on the server; only the ensembles of an export with
    --workflow carry them (a plain model takes features, not raw rows)."""
    if isinstance(client, triton_grpc.InferenceServerClient):
        config = client.get_model_config(name, as_json=True)["config"]
    else:
        config = client.get_model_config(name)
    parameter = config.get("parameters", {}).get(key)
    if parameter is None:
        raise InputError(
            f"model {name} on the server takes features, not raw rows (no {key} in its config): "
            "serve the ensemble of an export with --workflow"
        )
    return json.loads(parameter["string_value"])


def raw_spec(client: Client, name: str) -> RawSpec:
    """The raw inputs the ensemble `name` takes, from its config on the server."""
    return RawSpec.from_dict(_parameter(client, name, RAW_SPEC_PARAMETER))


def _ensemble(name: str, version: int | str | None) -> str:
    return name if version in (None, "") else ensemble_version_name(name, version)


def predict_raw(
    client: Client,
    name: str,
    rows: pd.DataFrame | RawBatch,
    version: int | str | None = None,
    spec: RawSpec | None = None,
) -> np.ndarray:
    """Click probabilities [B, 1] from raw rows through the ensemble `name` (or `name`_v<version>, the
    ensemble of that version's preprocessing and model), over HTTP or gRPC (the client's). `rows` is
    a pandas frame of raw bronze columns by name (tokens str or bytes, None or NaN = missing) or a
    RawBatch; `spec` (default: read from the ensemble's config) says how they are sent."""
    ensemble = _ensemble(name, version)
    spec = spec or raw_spec(client, ensemble)
    batch = spec.batch(rows) if isinstance(rows, pd.DataFrame) else rows
    return client.infer(ensemble, _inputs(client, spec.encode(batch))).as_numpy(OUTPUTS[0].name)


def score_candidates(
    client: Client, name: str, user: str, items: Sequence[str], version: int | str | None = None
) -> np.ndarray:
    """NCF's click probabilities [N] of one user's raw token for N raw candidate item tokens, through
    the ensemble `name` (or `name`_v<version>): one request of N rows (user, item), the user's raw
    column read from the model's first id input (NCF's ids are (user, item)). A token the workflow
    did not keep scores as its id 0, as Spark's workflow maps it."""
    if not isinstance(user, str) or not user:
        raise ValueError(f"score_candidates needs the user's raw token, got {user!r}")
    if isinstance(items, str) or not len(items):
        raise ValueError(f"score_candidates needs a list of one or more candidate item tokens, got {items!r}")
    ensemble = _ensemble(name, version)
    spec = raw_spec(client, ensemble)
    columns = _parameter(client, ensemble, FEATURES_PARAMETER)["categorical"]
    raw = [c.name for c in (*spec.continuous, *spec.categorical, *spec.lists)]
    if len(columns) != 2 or sorted(raw) != sorted(columns):
        raise ValueError(f"{ensemble} is not an NCF ensemble: its model takes {columns} from {spec}")
    rows = pd.DataFrame({columns[0]: [user] * len(items), columns[1]: list(items)})
    return predict_raw(client, name, rows, version, spec).reshape(-1)


class Recommendations(NamedTuple):
    """Per user (row) the top k raw items (str, best first), their scores and their ids; a row with
    fewer than k items to recommend ends in items "" at score -inf (id -1)."""

    items: np.ndarray
    scores: np.ndarray
    ids: np.ndarray


def recommend(
    client: Client,
    name: str,
    recent_items: Sequence[Sequence[str]],
    k: int | None = None,
    version: int | str | None = None,
) -> Recommendations:
    """The top `k` items (default: all K the ensemble serves) for each user's recent raw item tokens
    (one list per user, most recent first: the first max_length are sent), through the Mult-VAE
    ensemble `name` (or `name`_v<version>); a user's own items are never recommended."""
    if isinstance(recent_items, str) or not recent_items or any(isinstance(r, str) for r in recent_items):
        raise ValueError("recommend needs one list of recent item tokens per user, and one user or more")
    ensemble = _ensemble(name, version)
    spec = raw_spec(client, ensemble)
    if spec.continuous or spec.categorical or len(spec.lists) != 1:
        raise ValueError(f"{ensemble} is not a recommender's ensemble: it takes {spec}")
    rows = pd.DataFrame({spec.lists[0].name: [list(r) for r in recent_items]})
    result = client.infer(ensemble, _inputs(client, spec.encode(spec.batch(rows))))
    served = result.as_numpy(ITEM_IDS).shape[1]
    k = served if k is None else k
    if not 1 <= k <= served:
        raise ValueError(f"{ensemble} serves the top {served} items: ask for 1 to {served}, not {k}")
    items = np.vectorize(bytes.decode, otypes=[object])(result.as_numpy(ITEMS)[:, :k])
    return Recommendations(items, result.as_numpy(SCORES)[:, :k], result.as_numpy(ITEM_IDS)[:, :k])
