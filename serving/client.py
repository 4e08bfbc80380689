"""Client helpers over tritonclient: inference on the served click model, an A/B split of traffic
between loaded versions, and retiring old versions."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import np_to_triton_dtype

from serving.repository import INPUTS, OUTPUTS, RAW_INPUTS, config_pbtxt
from serving.tokens import token_bytes


def predict(
    client: triton_http.InferenceServerClient,
    name: str,
    dense: np.ndarray,
    categorical: np.ndarray,
    version: str = "",
) -> np.ndarray:
    """Click probabilities [B, 1] from one model version ("" = the newest loaded)."""
    inputs = []
    for spec, values in zip(INPUTS, (dense.astype(np.float32), categorical.astype(np.int64))):
        tensor = triton_http.InferInput(spec.name, values.shape, np_to_triton_dtype(values.dtype))
        tensor.set_data_from_numpy(values)
        inputs.append(tensor)
    return client.infer(name, inputs, model_version=version).as_numpy(OUTPUTS[0].name)


def predict_raw(
    client: triton_http.InferenceServerClient | triton_grpc.InferenceServerClient,
    name: str,
    raw_dense: np.ndarray,
    raw_categorical: np.ndarray,
) -> np.ndarray:
    """Click probabilities [B, 1] from raw Criteo fields through the ensemble `name`, over HTTP or
    gRPC (the client's): dense counts (NaN = missing) and category tokens, str or bytes (None or
    empty = missing), sent as fixed-width bytes (serving/tokens.py)."""
    protocol = triton_grpc if isinstance(client, triton_grpc.InferenceServerClient) else triton_http
    inputs = []
    for spec, values in zip(RAW_INPUTS, (raw_dense.astype(np.float64), token_bytes(raw_categorical))):
        tensor = protocol.InferInput(spec.name, values.shape, np_to_triton_dtype(values.dtype))
        tensor.set_data_from_numpy(values)
        inputs.append(tensor)
    return client.infer(name, inputs).as_numpy(OUTPUTS[0].name)


def ab_split(
    client: triton_http.InferenceServerClient,
    name: str,
    shares: dict[int, float],
    batches: list[tuple[np.ndarray, np.ndarray]],
    seed: int = 0,
) -> tuple[list[np.ndarray], Counter]:
    """Sends each batch to one version, drawn with the given shares (A/B); returns the predictions
    in batch order and how many batches each version served."""
    versions = sorted(shares)
    weights = np.array([shares[v] for v in versions], dtype=np.float64)
    if (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"shares must be non-negative and not all zero: {shares}")
    draws = np.random.default_rng(seed).choice(versions, size=len(batches), p=weights / weights.sum())
    served: Counter = Counter()
    predictions = []
    for version, (dense, categorical) in zip(draws, batches):
        predictions.append(predict(client, name, dense, categorical, str(version)))
        served[int(version)] += 1
    return predictions, served


def serve_only(
    client: triton_http.InferenceServerClient,
    repository: Path,
    name: str,
    keep: list[int],
    flavour: str = "python",
) -> None:
    """Pins `name` to exactly the `keep` versions and reloads it: the others unload, the kept ones
    keep serving (Triton reloads a model whose config changed without dropping unchanged versions)."""
    (repository / name / "config.pbtxt").write_text(config_pbtxt(name, flavour, only_versions=keep))
    client.load_model(name)
