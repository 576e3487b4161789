"""Real images for calibration, parity checks and int8 accuracy, preprocessed exactly as the weights expect."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TypeVar

import numpy as np

from mobilenet.data import eval_transform, load_rgb
from mobilenet.data.decode import ImageDecodeError
from mobilenet.errors import MobilenetError
from mobilenet.models.preprocessing import Preprocessing

T = TypeVar("T")


def spread_sample(paths: list[T], count: int) -> list[T]:
    """``count`` items (paths, indices) spread evenly over the sorted list, so every class folder is represented."""
    if count <= 0:
        raise MobilenetError(f"the number of calibration images must be >= 1, got {count}")
    if len(paths) <= count:
        return list(paths)
    picks = np.linspace(0, len(paths) - 1, count).round().astype(int)
    return [paths[i] for i in dict.fromkeys(picks.tolist())]


def load_batch(paths: list[Path], preprocessing: Preprocessing) -> np.ndarray:
    """Decode and preprocess ``paths`` into one float32 NCHW array; unreadable files are skipped with a warning."""
    transform = eval_transform(preprocessing)
    tensors = []
    for path in paths:
        try:
            tensors.append(transform(load_rgb(path)).numpy())
        except ImageDecodeError as exc:
            warnings.warn(f"skipping {path}: {exc}", stacklevel=2)
    if not tensors:
        raise MobilenetError("none of the given images could be decoded")
    return np.stack(tensors).astype(np.float32)


def folder_images(folder: str | Path) -> list[Path]:
    from mobilenet.evaluation.predict import expand_inputs

    folder = Path(folder)
    if not folder.exists():
        raise MobilenetError(f"image folder not found: {folder}")
    return expand_inputs([str(folder)])


def calibration_batch(folder: str | Path, preprocessing: Preprocessing, count: int) -> np.ndarray:
    return load_batch(spread_sample(folder_images(folder), count), preprocessing)


def generated_images(preprocessing: Preprocessing, count: int = 8, seed: int = 0) -> np.ndarray:
    """Images with edges, colours and textures (the built-in shapes generator), preprocessed like photos: the
    parity check's stand-in when no image folder is given, closer to real input than Gaussian noise."""
    from PIL import Image

    from mobilenet.data.synthetic import SHAPES, render_shape_image

    transform = eval_transform(preprocessing)
    size = max(32, round(preprocessing.resolution / max(preprocessing.crop_pct, 0.5)))
    rng = np.random.default_rng(seed)
    images = [Image.fromarray(render_shape_image(SHAPES[i % len(SHAPES)], size, rng)) for i in range(count)]
    return np.stack([transform(image).numpy() for image in images]).astype(np.float32)
