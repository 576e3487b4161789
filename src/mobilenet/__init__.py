"""mobilenet: the MobileNet family (V1, V2, V3) for mobile and embedded vision, built on PyTorch."""

from mobilenet.errors import MobilenetError
from mobilenet.models import MobileNet, ModelConfig, Preprocessing, create_model, list_models
from mobilenet.weights import load


def __getattr__(name: str):
    # The training stack imports matplotlib/tqdm: load it only when asked for.
    if name == "ImageClassifier":
        from mobilenet.training import ImageClassifier

        return ImageClassifier
    raise AttributeError(name)

__version__ = "0.1.0"

__all__ = [
    "ImageClassifier",
    "MobileNet",
    "MobilenetError",
    "ModelConfig",
    "Preprocessing",
    "create_model",
    "list_models",
    "load",
]
