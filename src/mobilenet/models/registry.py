"""Model names in TF-slim's release style (``mobilenet_v2_1.4_224``) and the factory behind them."""

from __future__ import annotations

import difflib
import fnmatch
import re
from typing import Any

import torch

from mobilenet.errors import MobilenetError
from mobilenet.models.builder import MobileNet, ModelConfig

_NAME = re.compile(
    r"^(?P<arch>mobilenet_v1(?:_conv|_shallow)?|mobilenet_v2|mobilenet_v3_(?:large|small)(?:_minimalistic)?)"
    r"_(?P<alpha>\d+(?:\.\d+)?)_(?P<resolution>\d+)$"
)

# The variants Google released (TF-slim READMEs), plus the V1 paper's two baselines (Tables 4 and 5).
_V1_ALPHAS = (1.0, 0.75, 0.5, 0.25)
_V1_RESOLUTIONS = (224, 192, 160, 128)
_V2_GRID = [(a, r) for a in (1.0, 0.75, 0.5, 0.35) for r in (224, 192, 160, 128, 96)] + [(1.4, 224), (1.3, 224)]
_V3_VARIANTS = [
    ("mobilenet_v3_large", 1.0),
    ("mobilenet_v3_large", 0.75),
    ("mobilenet_v3_small", 1.0),
    ("mobilenet_v3_small", 0.75),
    ("mobilenet_v3_large_minimalistic", 1.0),
    ("mobilenet_v3_small_minimalistic", 1.0),
]

_ALIASES = {"alpha": "width_multiplier", "input_size": "resolution"}


def format_alpha(alpha: float) -> str:
    """0.25 -> '0.25', 1 -> '1.0', as in TF-slim's file names."""
    text = f"{alpha:.4f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def model_name(arch: str, alpha: float, resolution: int) -> str:
    return f"{arch}_{format_alpha(alpha)}_{resolution}"


def _released_names() -> list[str]:
    names = [model_name("mobilenet_v1", a, r) for a in _V1_ALPHAS for r in _V1_RESOLUTIONS]
    names += [model_name("mobilenet_v1_conv", 1.0, 224), model_name("mobilenet_v1_shallow", 1.0, 224)]
    names += [model_name("mobilenet_v2", a, r) for a, r in _V2_GRID]
    names += [model_name(arch, a, 224) for arch, a in _V3_VARIANTS]
    return names


RELEASED_MODELS: tuple[str, ...] = tuple(_released_names())


def list_models(pattern: str = "*") -> list[str]:
    """Names of the released variants matching a shell-style ``pattern``; any other alpha and resolution
    can still be built by name (``mobilenet_v1_0.6_100``)."""
    if not isinstance(pattern, str):
        raise MobilenetError(f"list_models takes a shell-style pattern string such as 'mobilenet_v3*', got {pattern!r}")
    return [name for name in RELEASED_MODELS if fnmatch.fnmatchcase(name, pattern)]


def parse_name(name: str) -> tuple[str, float, int]:
    """Split a model name into (architecture, width multiplier, resolution), or explain what is wrong."""
    match = _NAME.match(name) if isinstance(name, str) else None
    if match is None:
        closest = difflib.get_close_matches(str(name), RELEASED_MODELS, n=3, cutoff=0.5)
        hint = f"; closest: {', '.join(closest)}" if closest else ""
        raise MobilenetError(
            f"unknown model {name!r}{hint} (names look like mobilenet_v2_1.0_224; `mobilenet models` lists them)"
        )
    return match["arch"], float(match["alpha"]), int(match["resolution"])


def config_from_name(name: str, **overrides: Any) -> ModelConfig:
    arch, alpha, resolution = parse_name(name)
    options = {_ALIASES.get(key, key): value for key, value in overrides.items()}
    if len(options) < len(overrides):
        both = sorted(key for key in overrides if _ALIASES.get(key, key) != key or key in _ALIASES.values())
        raise MobilenetError(f"{' and '.join(both)} name the same option; pass one of them")
    base = ModelConfig(
        arch=arch,
        width_multiplier=options.pop("width_multiplier", alpha),
        resolution=options.pop("resolution", resolution),
    )
    return base.replace(**options) if options else base


def create_model(name: str, *, pretrained: str | None = None, **overrides: Any) -> MobileNet:
    """Build a model by name; keyword options override the name's parts and the defaults.

    ``pretrained="torchvision"`` or ``"timm"`` downloads (once, into ``$MOBILENET_HOME``), verifies and loads that
    library's official weights for the name's architecture and width (:mod:`mobilenet.weights.download`).

    >>> model = create_model("mobilenet_v3_small_1.0_224", num_classes=10, dropout=0.1)
    """
    if pretrained is not None:
        from mobilenet.weights.download import pretrained_model  # lazy: the weights package imports this module

        return pretrained_model(name, pretrained, **overrides)
    return MobileNet(config_from_name(name, **overrides))


def build_on_meta(config: ModelConfig) -> MobileNet:
    """A model whose tensors have shapes but no storage: enough to count its cost instantly."""
    with torch.device("meta"):
        return MobileNet(config)
