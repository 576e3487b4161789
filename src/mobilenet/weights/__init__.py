"""Weights: our safetensors format, and importers for Google's, Keras', torchvision's and timm's releases."""

from mobilenet.weights.format import load, read_metadata, save_weights

__all__ = ["load", "read_metadata", "save_weights"]
