"""CTR and collaborative-filtering models built from shared parts (training/models/parts.py),
configured from the schema."""

from training.models.cf import CF_MODELS
from training.models.config import ModelConfig, TableConfig, example_inputs
from training.models.ctr import ALL_MODELS, MODELS, build_model, sparse_and_dense_parameters

__all__ = [
    "ALL_MODELS",
    "CF_MODELS",
    "MODELS",
    "ModelConfig",
    "TableConfig",
    "build_model",
    "example_inputs",
    "sparse_and_dense_parameters",
]
