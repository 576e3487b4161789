"""The built-in demo dataset: rotated shapes on textured backgrounds, written as an image folder.

Writing real PNG files (``root/train/<class>/<idx>.png`` and ``root/val/...``) means the demo runs the
exact code path a user's own data takes: scanning, decoding, transforms, loaders.

Every image is drawn from its own RNG seeded by ``(seed, class_index, image_index)``, so the output for a
given seed is byte-identical whatever order (or process) images are generated in.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from mobilenet.checks import is_integer
from mobilenet.errors import MobilenetError

GENERATOR_NAME = "mobilenet.shapes"
# Bump whenever the pixels change, so datasets cached on disk by an older version get regenerated.
GENERATOR_VERSION = 1
MANIFEST_NAME = "dataset.json"

# The first ten differ in outline or topology whatever the rotation; the default dataset uses those.
# Hexagon and pentagon are extra, harder classes: at small sizes they are hard to tell from a circle.
SHAPES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "cross",
    "ring", "half_disc", "arrow", "frame", "crescent",
    "hexagon", "pentagon",
)  # fmt: skip

# Difficulty. Tuned by training MobileNet V1 0.25 from scratch at 64 px on the default dataset: it passes
# 90% val top-1 after about 25 epochs (a few CPU minutes), and sits near chance for the first few. Shape
# size mattered most: with diameters down to 30% it stalled near 80%, because small shapes keep too few
# pixels of the corners that separate circle, square and triangle. Background clutter mattered little.
_SHAPE_DIAMETER = (0.55, 0.85)  # fraction of the image side
_MARGIN = 0.07  # fraction of the side kept free around the shape: eval center crops cut 6.25% per side
_MIN_CONTRAST = 120.0  # Euclidean RGB distance between the shape and the mean background under it
_GRADIENT_SPREAD = 60.0  # max per-channel difference across the background's colour gradient
_STRIPE_AMPLITUDE = 20.0
_BLOB_AMPLITUDE = 30.0
_NOISE_SIGMA = (2.0, 8.0)
_SUPERSAMPLE = 2  # draw masks at 2x and box-downscale: cheap antialiasing
_PNG_COMPRESS_LEVEL = 1  # speed over size: the files are regenerated on demand anyway
_PARALLEL_THRESHOLD = 1000  # images; below this one process is faster than starting a pool

Polygon = list[tuple[float, float]]
# (polygon in unit coordinates, fill): fill 255 paints the shape, 0 cuts a hole.
MaskOps = list[tuple[Polygon, int]]


@dataclass(frozen=True)
class ShapesPlan:
    """What :func:`generate_shapes_dataset` writes for a set of parameters, without writing it."""

    class_names: tuple[str, ...]
    images_per_class: int
    train_per_class: int
    val_per_class: int
    image_size: int

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_train(self) -> int:
        return self.train_per_class * self.num_classes

    @property
    def num_val(self) -> int:
        return self.val_per_class * self.num_classes

    @property
    def num_images(self) -> int:
        return self.num_train + self.num_val


def plan_shapes_dataset(
    *, num_classes: int = 10, images_per_class: int = 360, image_size: int = 96, val_fraction: float = 0.2
) -> ShapesPlan:
    """Validate the parameters and compute class names and per-split counts."""
    if not 2 <= num_classes <= len(SHAPES):
        raise MobilenetError(f"num_classes must be between 2 and {len(SHAPES)}, got {num_classes}")
    if image_size < 16:
        raise MobilenetError(f"image_size must be at least 16 pixels, got {image_size}")
    if not 0.0 < val_fraction < 1.0:
        raise MobilenetError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    val_per_class = int(round(images_per_class * val_fraction))
    train_per_class = images_per_class - val_per_class
    if val_per_class < 1 or train_per_class < 1:
        raise MobilenetError(
            f"images_per_class={images_per_class} with val_fraction={val_fraction} leaves a split empty; "
            "use more images per class"
        )
    return ShapesPlan(SHAPES[:num_classes], images_per_class, train_per_class, val_per_class, image_size)


def generate_shapes_dataset(
    root: str | PathLike[str],
    *,
    num_classes: int = 10,
    images_per_class: int = 360,
    image_size: int = 96,
    seed: int = 0,
    val_fraction: float = 0.2,
    workers: int | None = None,
) -> Path:
    """Write (or reuse) the shapes dataset under ``root`` and return ``root``.

    Use ``root / "train"`` and ``root / "val"`` as the image folders. A complete dataset with the same
    parameters (recorded in ``root/dataset.json``, written last) is reused as is; a partial or different
    one made by this function is replaced. ``train``/``val`` folders not made by it are never deleted.
    Not safe to call from several processes on the same ``root`` at once (generate on rank 0 first).

    ``workers``: processes to render with; ``None`` picks one per available core (at most one per class)
    for datasets of 1,000 images or more. The files are the same for any value.
    """
    plan = plan_shapes_dataset(
        num_classes=num_classes, images_per_class=images_per_class, image_size=image_size,
        val_fraction=val_fraction,
    )  # fmt: skip
    if not is_integer(seed) or seed < 0:
        raise MobilenetError(f"seed must be a non-negative integer, got {seed!r}")
    if workers is not None and workers < 1:
        raise MobilenetError(f"workers must be at least 1 (or None for automatic), got {workers}")
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise MobilenetError(f"dataset root {root} is a file; pass a folder path")
    params = {
        "num_classes": num_classes, "images_per_class": images_per_class, "image_size": image_size,
        "seed": seed, "val_fraction": float(val_fraction),
    }  # fmt: skip
    manifest = _read_manifest(root)
    if manifest is not None and _is_complete(root, manifest, params, plan):
        return root
    _clear_previous(root, manifest)
    root.mkdir(parents=True, exist_ok=True)
    _write_manifest(root, _manifest(params, plan, complete=False))
    _write_images(root, plan, seed, _worker_count(workers, plan))
    _write_manifest(root, _manifest(params, plan, complete=True))
    return root


def _worker_count(requested: int | None, plan: ShapesPlan) -> int:
    if requested is not None:
        return min(requested, plan.num_classes)
    if plan.num_images < _PARALLEL_THRESHOLD:
        return 1  # starting processes costs more than it saves
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, plan.num_classes))


def _write_images(root: Path, plan: ShapesPlan, seed: int, workers: int) -> None:
    jobs = [(root, plan, seed, class_index) for class_index in range(plan.num_classes)]
    if workers == 1:
        for job in jobs:
            _write_class(*job)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_write_class, *job) for job in jobs]
        for future in futures:
            future.result()  # re-raises a worker's error here


def _write_class(root: Path, plan: ShapesPlan, seed: int, class_index: int) -> None:
    name = plan.class_names[class_index]
    for split in ("train", "val"):
        (root / split / name).mkdir(parents=True, exist_ok=True)
    for image_index in range(plan.images_per_class):
        split = "train" if image_index < plan.train_per_class else "val"
        pixels = render_shape_image(name, plan.image_size, _image_rng(seed, class_index, image_index))
        path = root / split / name / f"{image_index:05d}.png"
        Image.fromarray(pixels).save(path, compress_level=_PNG_COMPRESS_LEVEL)


# --- manifest -----------------------------------------------------------------------------------------


def _manifest(params: dict[str, Any], plan: ShapesPlan, *, complete: bool) -> dict[str, Any]:
    return {
        "generator": GENERATOR_NAME,
        "version": GENERATOR_VERSION,
        "complete": complete,
        "params": params,
        "class_names": list(plan.class_names),
        "counts": {"train": plan.num_train, "val": plan.num_val},
    }


def _read_manifest(root: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((root / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("generator") == GENERATOR_NAME else None


def _write_manifest(root: Path, data: dict[str, Any]) -> None:
    # Write-then-rename so a crash never leaves a manifest that claims a complete dataset.
    tmp = root / f".{MANIFEST_NAME}.tmp"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, root / MANIFEST_NAME)


def _is_complete(root: Path, manifest: dict[str, Any], params: dict[str, Any], plan: ShapesPlan) -> bool:
    if manifest != _manifest(params, plan, complete=True):
        return False
    # Cheap guard against files deleted by hand after generation.
    for split, per_class in (("train", plan.train_per_class), ("val", plan.val_per_class)):
        for name in plan.class_names:
            folder = root / split / name
            if not folder.is_dir() or sum(1 for p in folder.iterdir() if p.suffix == ".png") != per_class:
                return False
    return True


def _clear_previous(root: Path, manifest: dict[str, Any] | None) -> None:
    splits = [root / "train", root / "val"]
    if manifest is None and any(p.exists() for p in splits):
        raise MobilenetError(
            f"{root} already has train/ or val/ folders that generate_shapes_dataset did not make; "
            "pass an empty or new folder"
        )
    for split in splits:
        shutil.rmtree(split, ignore_errors=True)


# --- rendering ----------------------------------------------------------------------------------------


def _image_rng(seed: int, class_index: int, image_index: int) -> np.random.Generator:
    return np.random.default_rng([seed, class_index, image_index])


def render_shape_image(shape: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One ``size`` x ``size`` uint8 RGB image of ``shape`` on a random textured background."""
    canvas = _background(size, rng)
    for _ in range(int(rng.integers(0, 3))):
        _paint(canvas, _distractor_mask(size, rng), _random_colour(rng), rng)
    mask = _shape_mask(shape, size, rng)
    _paint(canvas, mask, _contrasting_colour(canvas, mask, rng), rng)
    canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(rng.uniform(*_NOISE_SIGMA))
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """Two-colour gradient + optional stripes + soft blobs, float32 HxWx3 in roughly [0, 255].

    Every term is built from 1-D row and column profiles (outer sums/products), which keeps the
    default 3,600-image dataset well inside its time budget.
    """
    coords = np.arange(size, dtype=np.float32) / size
    angle = rng.uniform(0, 2 * math.pi)
    t = (coords * math.cos(angle))[None, :] + (coords * math.sin(angle))[:, None]
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    start = _random_colour(rng)
    canvas = start + _signed_colour(rng, _GRADIENT_SPREAD) * t[..., None]
    if rng.random() < 0.6:
        freq, phase, angle = rng.uniform(2, 8), rng.uniform(0, 2 * math.pi), rng.uniform(0, math.pi)
        along_x = 2 * math.pi * freq * math.cos(angle) * coords + phase
        along_y = 2 * math.pi * freq * math.sin(angle) * coords
        # sin(a + b) = sin a cos b + cos a sin b
        wave = np.outer(np.cos(along_y), np.sin(along_x)) + np.outer(np.sin(along_y), np.cos(along_x))
        canvas += wave[..., None] * _signed_colour(rng, _STRIPE_AMPLITUDE)
    for _ in range(int(rng.integers(1, 5))):
        cy, cx, sigma = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.25)
        blob = np.outer(_gauss(coords, cy, sigma), _gauss(coords, cx, sigma))
        canvas += blob[..., None] * _signed_colour(rng, _BLOB_AMPLITUDE)
    return canvas


def _gauss(coords: np.ndarray, center: float, sigma: float) -> np.ndarray:
    return np.exp(-((coords - center) ** 2) / (2 * sigma**2))


def _signed_colour(rng: np.random.Generator, amplitude: float) -> np.ndarray:
    return rng.uniform(-amplitude, amplitude, 3).astype(np.float32)


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, 3).astype(np.float32)


def _contrasting_colour(canvas: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random colour at least ``_MIN_CONTRAST`` away from the mean background under the shape."""
    under = (canvas * mask[..., None]).sum(axis=(0, 1)) / max(float(mask.sum()), 1e-6)
    for _ in range(20):
        colour = _random_colour(rng)
        if np.linalg.norm(colour - under) >= _MIN_CONTRAST:
            return colour
    # The opposite corner of the RGB cube is always >= 127.5 * sqrt(3) away.
    return np.where(under < 127.5, 255.0, 0.0).astype(np.float32)


def _paint(canvas: np.ndarray, mask: np.ndarray, colour: np.ndarray, rng: np.random.Generator) -> None:
    """Alpha-blend ``colour`` (with a faint shading gradient, as real objects have) through ``mask``."""
    size = canvas.shape[0]
    shade = np.linspace(-1.0, 1.0, size, dtype=np.float32) * np.float32(rng.uniform(-20, 20))
    fill = colour + (shade[:, None] if rng.random() < 0.5 else shade[None, :])[..., None]
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return
    # Only the mask's bounding box changes; blending there alone is several times cheaper.
    window = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    fill = np.broadcast_to(fill, canvas.shape)[window]
    alpha = mask[window][..., None]
    canvas[window] += (fill - canvas[window]) * alpha


def _shape_mask(shape: str, size: int, rng: np.random.Generator) -> np.ndarray:
    radius = rng.uniform(*_SHAPE_DIAMETER) * size / 2
    # Keep clear of the border strip that an eval center crop (crop_pct 0.875) cuts away.
    low, high = radius + _MARGIN * size, size - radius - _MARGIN * size
    cx, cy = rng.uniform(low, high, 2)
    return _rasterize(_SHAPE_OPS[shape](), size, cx, cy, radius, rng.uniform(0, 2 * math.pi))


def _distractor_mask(size: int, rng: np.random.Generator) -> np.ndarray:
    """A small irregular blob, so 'there is an object' is not by itself the answer."""
    radius = rng.uniform(0.04, 0.09) * size
    cx, cy = rng.uniform(radius, size - radius, 2)
    n = int(rng.integers(5, 9))
    angles = np.sort(rng.uniform(0, 2 * math.pi, n))
    radii = rng.uniform(0.5, 1.0, n)
    blob: Polygon = [(r * math.cos(a), r * math.sin(a)) for a, r in zip(angles, radii, strict=True)]
    return _rasterize([(blob, 255)], size, cx, cy, radius, 0.0)


def _rasterize(ops: MaskOps, size: int, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    """Draw unit-coordinate polygons rotated by ``angle``, scaled by ``radius`` and centered at
    ``(cx, cy)``; return an antialiased float32 mask in [0, 1]."""
    scale = _SUPERSAMPLE
    big = Image.new("L", (size * scale, size * scale), 0)
    draw = ImageDraw.Draw(big)
    cos_a, sin_a = math.cos(angle), math.sin(angle)
    for polygon, fill in ops:
        points = [
            ((cx + radius * (x * cos_a - y * sin_a)) * scale, (cy + radius * (x * sin_a + y * cos_a)) * scale)
            for x, y in polygon
        ]
        draw.polygon(points, fill=fill)
    small = big.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


# --- shapes in unit coordinates (bounding radius about 1) ---------------------------------------------


def _regular(
    n: int, radius: float = 1.0, offset: float = 0.0, center: tuple[float, float] = (0.0, 0.0)
) -> Polygon:
    return [
        (center[0] + radius * math.cos(offset + 2 * math.pi * k / n),
         center[1] + radius * math.sin(offset + 2 * math.pi * k / n))
        for k in range(n)
    ]  # fmt: skip


def _disc(radius: float = 1.0, center: tuple[float, float] = (0.0, 0.0)) -> Polygon:
    return _regular(64, radius, 0.0, center)


def _star() -> MaskOps:
    points = []
    for k in range(10):
        r = 1.0 if k % 2 == 0 else 0.42
        a = -math.pi / 2 + math.pi * k / 5
        points.append((r * math.cos(a), r * math.sin(a)))
    return [(points, 255)]


def _cross() -> MaskOps:
    w = 0.3
    points = [(w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1),
              (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w), (-w, -1)]  # fmt: skip
    return [(points, 255)]


def _half_disc() -> MaskOps:
    # Centered on its bounding box rather than on the circle's center so it fills the space it is given.
    arc = [(0.9 * math.cos(a), 0.9 * math.sin(a) - 0.45) for a in np.linspace(0, math.pi, 33)]
    return [(arc, 255)]


def _arrow() -> MaskOps:
    points = [(-1, -0.2), (0.15, -0.2), (0.15, -0.6), (1, 0), (0.15, 0.6), (0.15, 0.2), (-1, 0.2)]
    return [(points, 255)]


_SHAPE_OPS: dict[str, Callable[[], MaskOps]] = {
    "circle": lambda: [(_disc(0.9), 255)],
    "square": lambda: [(_regular(4, 1.0, math.pi / 4), 255)],
    "triangle": lambda: [(_regular(3, 1.0, -math.pi / 2), 255)],
    "hexagon": lambda: [(_regular(6), 255)],
    "star": _star,
    "cross": _cross,
    "ring": lambda: [(_disc(1.0), 255), (_disc(0.55), 0)],
    "half_disc": _half_disc,
    "arrow": _arrow,
    "frame": lambda: [(_regular(4, 1.0, math.pi / 4), 255), (_regular(4, 0.55, math.pi / 4), 0)],
    "crescent": lambda: [(_disc(1.0), 255), (_disc(0.85, (0.45, 0.0)), 0)],
    "pentagon": lambda: [(_regular(5, 1.0, -math.pi / 2), 255)],
}
