"""The MobileNet family built from the papers' tables."""

from mobilenet.models.builder import FeatureInfo, MobileNet, ModelConfig
from mobilenet.models.preprocessing import Preprocessing
from mobilenet.models.registry import RELEASED_MODELS, config_from_name, create_model, list_models, model_name
from mobilenet.models.specs import ARCHITECTURES, ArchSpec, LayerKind, LayerSpec

__all__ = [
    "ARCHITECTURES",
    "ArchSpec",
    "FeatureInfo",
    "LayerKind",
    "LayerSpec",
    "MobileNet",
    "ModelConfig",
    "Preprocessing",
    "RELEASED_MODELS",
    "config_from_name",
    "create_model",
    "list_models",
    "model_name",
]
