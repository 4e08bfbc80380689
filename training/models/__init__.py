"""CTR models built from shared parts (training/models/parts.py)."""

from training.models.ctr import MODELS, ModelConfig, build_model, sparse_and_dense_parameters

__all__ = ["MODELS", "ModelConfig", "build_model", "sparse_and_dense_parameters"]
