"""Safe rollouts on a running server: a candidate version served beside production, a configured share
of traffic sent to it, then promoted or rolled back, with no request failing on the way.

The routing of a served name is one file the rollout owns, <repository>/<name>.routing.json (Triton
reads only folders there): the production version, the candidate (or none) and the candidate's share.
Routers read it per request (re-read only when the file changed) and send each request to the ensemble
<name>_v<k> of its version. The alias <name> (the newest export) is not routed: clients of a routed
name use a Router, since retiring the version the alias calls leaves it failing.

Why no request fails: a version's models and ensemble are loaded and ready before the routing names
it, and a version leaves the routing a drain period before it is unloaded, so requests reach only
loaded versions; the versions that stay loaded are pinned (pin_versions) and Triton swaps a reloaded
model in only once it is ready. A request that still races an unload (a router that read the routing
just before it changed) gets Triton's unknown-model error; the router then re-reads the routing and
retries once on production, and counts the retry.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from tritonclient.utils import InferenceServerException

from rec_plugin.errors import InputError, first_line
from rec_plugin.json_files import write_json
from serving.client import Client, predict_raw, raw_spec
from serving.preprocessor import RawBatch, RawSpec
from serving.repository import (
    ensemble_model_name,
    ensemble_version_name,
    pin_versions,
    postprocess_model_name,
    preprocess_model_name,
    versions,
)

# How long a version that left the routing keeps serving before it is unloaded: longer than the
# slowest request plus the time a router takes to see the new routing.
DRAIN_S = 5.0
# How Triton's answer for a model (version) not loaded or not ready begins: "... is not found", "...
# has no available versions", "... is not at ready state".
_UNAVAILABLE = "Request for unknown model"


def routing_file(repository: Path, name: str) -> Path:
    return Path(repository) / f"{name}.routing.json"


def _no_routing(repository: Path, name: str) -> InputError:
    return InputError(f"{name} has no routing in {repository}: serve_production first")


def _bucket(key: str, salt: int) -> float:
    """A stable draw in [0, 1) for a request key: the same user lands on the same side of a split (in
    every process), and each candidate (the salt) splits the users differently."""
    digest = hashlib.blake2b(f"{salt}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True)
class Routing:
    """Which versions of a served name take traffic: production, and a candidate taking
    `candidate_share` of the request keys."""

    production: int
    candidate: int | None = None
    candidate_share: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.candidate_share <= 1.0:
            raise InputError(f"a candidate's share is between 0 and 1, not {self.candidate_share}")
        if self.candidate == self.production:
            raise InputError(f"version {self.production} is production already: it cannot be the candidate")
        if self.candidate is None and self.candidate_share:
            raise InputError("a share of traffic needs a candidate to take it")

    def version_for(self, key: str) -> int:
        """The version that serves request `key` (sticky: a key stays on its side while the share
        holds, and a growing share only moves keys to the candidate)."""
        if self.candidate is not None and _bucket(key, self.candidate) < self.candidate_share:
            return self.candidate
        return self.production

    def routed(self) -> list[int]:
        """The versions that take traffic."""
        return sorted(v for v in (self.production, self.candidate) if v is not None)

    @classmethod
    def load(cls, repository: Path, name: str) -> Routing:
        path = routing_file(repository, name)
        if not path.is_file():
            raise _no_routing(repository, name)
        return cls(**json.loads(path.read_text()))

    def save(self, repository: Path, name: str) -> None:
        """Written whole or not at all (a temporary file renamed over it): a router never reads half."""
        write_json(routing_file(repository, name), asdict(self))


def _composing(repository: Path, name: str) -> list[str]:
    """The models each ensemble <name>_v<k> calls (version k of each): preprocess, model, postprocess."""
    models = (preprocess_model_name(name), ensemble_model_name(name), postprocess_model_name(name))
    return [model for model in models if (Path(repository) / model).is_dir()]


def _serve(client: Client, repository: Path, name: str, keep: list[int], ensemble: str) -> None:
    """Pins the composing models to the `keep` versions, then (re)loads `ensemble`: Triton reloads an
    ensemble's composing models with it (measured here), each swapped in once ready, and a kept
    version serves on meanwhile."""
    for model in _composing(repository, name):
        pin_versions(repository, model, keep)
    client.load_model(ensemble)
    not_ready = [
        f"{model} version {v}"
        for model in _composing(repository, name)
        for v in keep
        if not client.is_model_ready(model, str(v))
    ]
    if not_ready or not client.is_model_ready(ensemble):
        raise InputError(f"not ready on the server after loading {ensemble}: {not_ready or ensemble}")


def _load_version(client: Client, repository: Path, name: str, version: int, served: list[int]) -> None:
    """Loads the ensemble of `version` with its composing models, keeping the `served` versions."""
    ensemble = ensemble_version_name(name, version)
    missing = [m for m in _composing(repository, name) if version not in versions(repository, m)]
    if missing or not (Path(repository) / ensemble).is_dir():
        raise InputError(f"{name} version {version} is not exported to {repository}: export it first")
    try:
        _serve(client, repository, name, sorted({*served, version}), ensemble)
    except (InferenceServerException, InputError) as error:
        if served:  # the configs on disk pin the versions that serve, not the one that failed
            for model in _composing(repository, name):
                pin_versions(repository, model, served)
        if isinstance(error, InputError):  # loaded, but not ready
            raise
        reason = first_line(error.message(), "no reason given")
        raise InputError(f"{ensemble} did not load: {reason} (the server log has the rest)") from None


def serve_production(
    client: Client, repository: Path, name: str, version: int, drain_s: float = DRAIN_S
) -> Routing:
    """Loads `version` and routes all traffic to it (no candidate): the start of routed serving, or a
    deploy over it, where the versions routed before serve on until the drain is over."""
    routed = Routing.load(repository, name).routed() if routing_file(repository, name).is_file() else []
    _load_version(client, repository, name, version, routed)
    routing = Routing(version)
    _retire(client, repository, name, routing, [v for v in routed if v != version], drain_s)
    return routing


def push_candidate(client: Client, repository: Path, name: str, version: int, share: float) -> Routing:
    """Loads `version` beside production and only then routes `share` of the request keys to it (again
    with the same candidate: a new share)."""
    routing = Routing.load(repository, name)
    if routing.candidate not in (None, version):
        raise InputError(f"{name} has candidate {routing.candidate} already: promote or roll it back first")
    pushed = replace(routing, candidate=version, candidate_share=share)  # checks version and share
    _load_version(client, repository, name, version, [routing.production])
    pushed.save(repository, name)
    return pushed


def _retire(
    client: Client, repository: Path, name: str, routing: Routing, old: list[int], drain_s: float
) -> None:
    """Routing first, then the drain, then the unload: no router sends to the `old` versions after the
    drain."""
    routing.save(repository, name)
    if not old:
        return
    time.sleep(drain_s)
    for version in old:
        client.unload_model(ensemble_version_name(name, version))
    _serve(client, repository, name, routing.routed(), ensemble_version_name(name, routing.production))


def _candidate(repository: Path, name: str) -> Routing:
    routing = Routing.load(repository, name)
    if routing.candidate is None:
        raise InputError(f"{name} has no candidate (production is version {routing.production})")
    return routing


def promote(client: Client, repository: Path, name: str, drain_s: float = DRAIN_S) -> Routing:
    """The candidate becomes production for all traffic; the old production unloads after `drain_s`."""
    routing = _candidate(repository, name)
    promoted = Routing(routing.candidate)
    _retire(client, repository, name, promoted, [routing.production], drain_s)
    return promoted


def rollback(client: Client, repository: Path, name: str, drain_s: float = DRAIN_S) -> Routing:
    """Production takes all traffic again; the candidate unloads after `drain_s`."""
    routing = _candidate(repository, name)
    rolled_back = Routing(routing.production)
    _retire(client, repository, name, rolled_back, [routing.candidate], drain_s)
    return rolled_back


def _unavailable(error: InferenceServerException) -> bool:
    return _UNAVAILABLE in (error.message() or "")


class Routed(NamedTuple):
    """A routed request's answer and the version that gave it (what an A/B test attributes it to)."""

    version: int
    probabilities: np.ndarray


class Router:
    """Sends raw rows of a click model to the version the routing picks for each request's key, as a
    load balancer in front of the server would; one per sending thread (it holds one client).
    `served` counts requests by the version that answered, `retries` those re-sent to production
    after their version had gone."""

    def __init__(self, client: Client, repository: Path, name: str) -> None:
        self.client, self.repository, self.name = client, Path(repository), name
        self.served: Counter[int] = Counter()
        self.retries = 0
        self._routing: Routing | None = None
        self._seen: tuple[int, int, int] | None = None
        self._specs: dict[int, RawSpec] = {}

    def routing(self) -> Routing:
        """The current routing, re-read only when its file changed (a stat per call)."""
        try:
            status = routing_file(self.repository, self.name).stat()
        except FileNotFoundError:
            raise _no_routing(self.repository, self.name) from None
        seen = (status.st_ino, status.st_mtime_ns, status.st_size)
        if seen != self._seen or self._routing is None:
            self._routing, self._seen = Routing.load(self.repository, self.name), seen
        return self._routing

    def _send(self, rows: pd.DataFrame | RawBatch, version: int) -> np.ndarray:
        if version not in self._specs:
            self._specs[version] = raw_spec(self.client, ensemble_version_name(self.name, version))
        return predict_raw(self.client, self.name, rows, version, self._specs[version])

    def predict(self, rows: pd.DataFrame | RawBatch, key: str) -> Routed:
        """Click probabilities [B, 1] for `rows` from the version routed for `key` (e.g. the user)."""
        version = self.routing().version_for(key)
        try:
            probabilities = self._send(rows, version)
        except InferenceServerException as error:
            if not _unavailable(error):
                raise
            self._specs.pop(version, None)
            version = self.routing().production
            self.retries += 1
            probabilities = self._send(rows, version)
        self.served[version] += 1
        return Routed(version, probabilities)
