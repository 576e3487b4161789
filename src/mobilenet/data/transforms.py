"""Image -> tensor transforms, all derived from a :class:`~mobilenet.models.preprocessing.Preprocessing`.

Built on Pillow, numpy and torch only. Transforms are small classes rather than closures so that
DataLoader workers started with ``spawn`` (macOS, Windows) can pickle them.

Randomness comes from torch's global RNG, so ``torch.manual_seed`` and the DataLoader's per-worker
seeding make augmentation reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from mobilenet.errors import MobilenetError
from mobilenet.models.preprocessing import Preprocessing

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}

# Light augmentation by default: the MobileNet V1 paper notes that small models overfit less and need
# less aggressive augmentation than Inception's (0.08, 1.0) area range.
DEFAULT_TRAIN_SCALE = (0.25, 1.0)
DEFAULT_TRAIN_RATIO = (3.0 / 4.0, 4.0 / 3.0)
_CROP_ATTEMPTS = 10

Box = tuple[int, int, int, int]  # left, top, right, bottom in pixels


def to_tensor_normalized(img: Image.Image, pre: Preprocessing) -> torch.Tensor:
    """RGB PIL image -> float32 CHW tensor ``(x / 255 - mean) / std`` in ``pre.channel_order``.

    ``pre.mean``/``pre.std`` are given in ``pre.channel_order``, so channels are reordered before
    normalizing. This is the only place the normalize math lives.
    """
    if img.mode != "RGB":
        raise MobilenetError(f"expected an RGB image, got mode {img.mode!r}; decode files with load_rgb()")
    if len(pre.mean) != 3:
        raise MobilenetError(
            f"preprocessing has {len(pre.mean)} channels but images are RGB; use 3 mean/std values"
        )
    pixels = np.array(img, dtype=np.float32)  # HWC, a writable copy torch can own
    if pre.channel_order == "BGR":
        pixels = pixels[:, :, ::-1]
    mean = np.asarray(pre.mean, dtype=np.float32)
    std = np.asarray(pre.std, dtype=np.float32)
    normalized = (pixels / 255.0 - mean) / std
    return torch.from_numpy(np.ascontiguousarray(normalized.transpose(2, 0, 1)))


def resize_shorter_side(img: Image.Image, size: int, interpolation: str) -> Image.Image:
    """Scale so the shorter side is ``size``; the longer side is truncated like timm/torchvision do,
    so pretrained weights see the same pixels they were evaluated with."""
    width, height = img.size
    if min(width, height) == size:
        return img
    if width <= height:
        new_size = (size, int(size * height / width))
    else:
        new_size = (int(size * width / height), size)
    return img.resize(new_size, _RESAMPLE[interpolation])


def center_crop_box(width: int, height: int, crop: int) -> Box:
    if crop > width or crop > height:
        raise MobilenetError(f"cannot center-crop {crop}px from a {width}x{height} image")
    left = int(round((width - crop) / 2.0))
    top = int(round((height - crop) / 2.0))
    return (left, top, left + crop, top + crop)


@dataclass(frozen=True)
class EvalTransform:
    """Resize shorter side to ``pre.resize_size``, center-crop ``pre.resolution``, normalize."""

    pre: Preprocessing

    def __call__(self, img: Image.Image) -> torch.Tensor:
        resized = resize_shorter_side(img, self.pre.resize_size, self.pre.interpolation)
        cropped = resized.crop(center_crop_box(*resized.size, self.pre.resolution))
        return to_tensor_normalized(cropped, self.pre)


@dataclass(frozen=True)
class TrainTransform:
    """Inception-style random-resized-crop to ``pre.resolution``, random horizontal flip, normalize."""

    pre: Preprocessing
    scale: tuple[float, float] = DEFAULT_TRAIN_SCALE
    ratio: tuple[float, float] = DEFAULT_TRAIN_RATIO
    hflip: float = 0.5

    def __post_init__(self) -> None:
        low, high = self.scale
        if not 0.0 < low <= high <= 1.0:
            raise MobilenetError(f"train scale must satisfy 0 < min <= max <= 1, got {self.scale}")
        if not 0.0 < self.ratio[0] <= self.ratio[1]:
            raise MobilenetError(f"train ratio must satisfy 0 < min <= max, got {self.ratio}")
        if not 0.0 <= self.hflip <= 1.0:
            raise MobilenetError(f"hflip probability must be in [0, 1], got {self.hflip}")

    def __call__(self, img: Image.Image) -> torch.Tensor:
        box = random_resized_crop_box(img.size[0], img.size[1], self.scale, self.ratio)
        size = (self.pre.resolution, self.pre.resolution)
        # Pillow crops and resizes in one pass when given a box, which is cheaper than crop().resize().
        out = img.resize(size, _RESAMPLE[self.pre.interpolation], box=box)
        if self.hflip > 0 and torch.rand(()).item() < self.hflip:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return to_tensor_normalized(out, self.pre)


def random_resized_crop_box(
    width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float]
) -> Box:
    """Sample a crop covering ``scale`` of the area with aspect in ``ratio`` (log-uniform).

    Up to 10 tries; if none fits inside the image, fall back to the largest centered crop whose aspect
    is clamped into ``ratio``.
    """
    area = width * height
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(_CROP_ATTEMPTS):
        target_area = area * _uniform(scale[0], scale[1])
        aspect = math.exp(_uniform(log_low, log_high))
        crop_w = int(round(math.sqrt(target_area * aspect)))
        crop_h = int(round(math.sqrt(target_area / aspect)))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = int(torch.randint(0, height - crop_h + 1, ()).item())
            left = int(torch.randint(0, width - crop_w + 1, ()).item())
            return (left, top, left + crop_w, top + crop_h)
    return _fallback_box(width, height, ratio)


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * torch.rand(()).item()


def _fallback_box(width: int, height: int, ratio: tuple[float, float]) -> Box:
    aspect = width / height
    if aspect < ratio[0]:
        crop_w, crop_h = width, min(height, max(1, int(round(width / ratio[0]))))
    elif aspect > ratio[1]:
        crop_w, crop_h = min(width, max(1, int(round(height * ratio[1])))), height
    else:
        crop_w, crop_h = width, height
    left = (width - crop_w) // 2
    top = (height - crop_h) // 2
    return (left, top, left + crop_w, top + crop_h)


def eval_transform(pre: Preprocessing) -> EvalTransform:
    """Deterministic PIL -> tensor transform for validation, evaluation and prediction."""
    return EvalTransform(pre)


def train_transform(
    pre: Preprocessing,
    scale: tuple[float, float] = DEFAULT_TRAIN_SCALE,
    ratio: tuple[float, float] = DEFAULT_TRAIN_RATIO,
    hflip: float = 0.5,
) -> TrainTransform:
    """Random PIL -> tensor transform for training.

    The default ``scale=(0.25, 1.0)`` is deliberately lighter than Inception's ``(0.08, 1.0)``: the
    MobileNet V1 paper trains small models with less augmentation because they overfit less.
    """
    return TrainTransform(
        pre, (float(scale[0]), float(scale[1])), (float(ratio[0]), float(ratio[1])), float(hflip)
    )
