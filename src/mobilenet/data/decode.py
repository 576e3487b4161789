"""Decode any image file Pillow understands into an upright 8-bit RGB image.

Everything that turns a file into pixels goes through :func:`load_rgb`, so training, evaluation and
prediction see exactly the same pixels for the same file.
"""

from __future__ import annotations

import struct
from os import PathLike
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from mobilenet.errors import MobilenetError

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
)

# Pillow's plugins report malformed data with a zoo of exception types, not only OSError.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    struct.error,
    Image.DecompressionBombError,
)

_WHITE = (255, 255, 255, 255)


class ImageDecodeError(MobilenetError):
    """A file is missing, is not an image, or is corrupt or truncated."""


def is_image_file(path: str | PathLike[str]) -> bool:
    """True when the file name has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def load_rgb(path: str | PathLike[str]) -> Image.Image:
    """Open ``path`` and return a fully decoded, EXIF-upright ``RGB`` image detached from the file.

    Conversions: grayscale/bilevel/CMYK/YCbCr go through Pillow; 16-bit and 32-bit integer images are
    rescaled to 8 bits instead of clipped (Pillow clips everything above 255 to white); float images in
    ``[0, 1]`` are scaled by 255. Images with transparency (RGBA, LA, palette or RGB with a transparent
    colour) are composited on white: the colour under fully transparent pixels is undefined (often black
    or left-over paint), and white is how viewers and browsers usually show such images. Animated or
    multi-page files (GIF, TIFF, WebP) give their first frame.

    Raises :class:`ImageDecodeError` (a :class:`~mobilenet.errors.MobilenetError`) naming the file when
    it is missing, is not an image, or is corrupt or truncated.
    """
    path = Path(path)
    if not path.exists():
        raise ImageDecodeError(f"cannot read image {path}: file does not exist; check the path")
    if not path.is_file():
        raise ImageDecodeError(f"cannot read image {path}: it is a folder, not a file; pass an image file")
    try:
        with Image.open(path) as img:
            # Decoding is lazy; forcing it here makes truncated files fail now, not inside a transform.
            img.load()
            upright = ImageOps.exif_transpose(img)
            return _to_rgb(upright)
    except _DECODE_ERRORS as exc:
        raise ImageDecodeError(
            f"cannot decode image {path}: {type(exc).__name__}: {exc}; the file is corrupt, truncated "
            "or not an image - replace or delete it"
        ) from exc


def _to_rgb(img: Image.Image) -> Image.Image:
    """``img`` is already detached from its file (``exif_transpose`` returns a new image)."""
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        return _composite_on_white(img)
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I") or img.mode == "F":
        return _high_depth_to_rgb(img)
    return img.convert("RGB")


def _composite_on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, _WHITE)
    return Image.alpha_composite(background, rgba).convert("RGB")


def _high_depth_to_rgb(img: Image.Image) -> Image.Image:
    """Rescale 16/32-bit integer and float single-channel images to uint8 gray, then to RGB."""
    values = np.asarray(img).astype(np.float64)
    if img.mode == "F":
        peak = 1.0 if values.size and values.max() <= 1.0 else 255.0
    elif img.mode.startswith("I;16"):
        peak = 65535.0
    else:
        # Mode "I" carries no bit depth; guess the smallest common range that holds the data.
        top = values.max() if values.size else 0.0
        peak = 255.0 if top <= 255 else 65535.0 if top <= 65535 else float(top)
    gray = np.clip(np.rint(values * (255.0 / peak)), 0, 255).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")
