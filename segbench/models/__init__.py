"""Reference segmentation networks and their registry."""

from segbench.models.base import SegmentationModel
from segbench.models.registry import MODELS, ModelSpec, build_model, get_spec, model_stats, validate_model

__all__ = [
    "MODELS",
    "ModelSpec",
    "SegmentationModel",
    "build_model",
    "get_spec",
    "model_stats",
    "validate_model",
]
