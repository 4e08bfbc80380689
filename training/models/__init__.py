"""CTR models built from shared parts (training/models/parts.py), configured from the schema."""

from training.models.config import ModelConfig, TableConfig, example_inputs
from training.models.ctr import MODELS, build_model, sparse_and_dense_parameters

__all__ = [
    "MODELS",
    "ModelConfig",
    "TableConfig",
    "build_model",
    "example_inputs",
    "sparse_and_dense_parameters",
]
