"""Input preprocessing that belongs to a set of weights.

This is the single source of truth: data transforms, predict, evaluate and exporters all derive what they
do to an image from a :class:`Preprocessing` stored next to the weights. Values follow timm's
``pretrained_cfg`` vocabulary (``crop_pct``, ``interpolation``) so users of that library feel at home.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from mobilenet.checks import is_integer, is_number
from mobilenet.errors import MobilenetError

Interpolation = Literal["bilinear", "bicubic", "nearest"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# TF-slim and Keras MobileNets take inputs in [-1, 1]: (x/255 - 0.5) / 0.5.
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB image becomes the model's input tensor.

    The pixel pipeline is: decode to RGB uint8, resize the shorter side to ``resolution / crop_pct``
    with ``interpolation``, center-crop ``resolution``, scale to ``[0, 1]``, then ``(x - mean) / std``
    per channel in ``channel_order``.
    """

    resolution: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    crop_pct: float = 0.875
    interpolation: Interpolation = "bilinear"
    channel_order: Literal["RGB", "BGR"] = "RGB"
    labels_offset: int = 0  # 1 for TF-slim's 1001-way heads whose class 0 is "background"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not is_integer(self.resolution) or self.resolution < 1:
            raise MobilenetError(f"preprocessing resolution must be a positive integer, got {self.resolution!r}")
        if not is_number(self.crop_pct) or not 0.0 < self.crop_pct <= 1.0:
            raise MobilenetError(f"crop_pct must be a number in (0, 1], got {self.crop_pct!r}")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if not isinstance(values, (tuple, list)) or not values or not all(is_number(v) for v in values):
                raise MobilenetError(f"preprocessing {name} must be a non-empty list of finite numbers, got {values!r}")
        if len(self.mean) != len(self.std):
            raise MobilenetError("preprocessing mean and std must have the same number of channels")
        if any(s <= 0 for s in self.std):
            raise MobilenetError("preprocessing std values must be positive")
        if self.channel_order not in ("RGB", "BGR"):
            raise MobilenetError(f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")
        if self.labels_offset not in (0, 1) or isinstance(self.labels_offset, bool):
            raise MobilenetError(
                f"labels_offset must be 0 or 1 (1: a background class first), got {self.labels_offset!r}"
            )
        if not isinstance(self.extra, dict):
            raise MobilenetError(f"preprocessing extra must be a dict, got {type(self.extra).__name__}")
        if self.interpolation not in ("bilinear", "bicubic", "nearest"):
            raise MobilenetError(
                f"unknown interpolation {self.interpolation!r}; use bilinear, bicubic or nearest"
            )

    @property
    def resize_size(self) -> int:
        """Shorter-side size before the center crop (timm's ``int(size / crop_pct)``)."""
        return int(self.resolution / self.crop_pct)

    @property
    def value_range(self) -> tuple[float, float]:
        """Range of the normalized input, for documentation and exporters' metadata."""
        low = min((0.0 - m) / s for m, s in zip(self.mean, self.std))
        high = max((1.0 - m) / s for m, s in zip(self.mean, self.std))
        return (low, high)

    def replace(self, **changes: Any) -> Preprocessing:
        values = asdict(self)
        values.update(changes)
        return Preprocessing(**values)

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["mean"] = list(self.mean)
        values["std"] = list(self.std)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Preprocessing:
        if not isinstance(values, dict):
            raise MobilenetError(f"preprocessing must be a table of fields, got {type(values).__name__}")
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(values) - known
        if unknown:
            raise MobilenetError(f"unknown preprocessing fields: {sorted(unknown)}")
        values = dict(values)
        for key in ("mean", "std"):
            if isinstance(values.get(key), (list, tuple)):
                values[key] = tuple(float(v) if is_number(v) else v for v in values[key])
        return cls(**values)

