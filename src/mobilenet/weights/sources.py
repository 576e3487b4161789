"""Where official pretrained MobileNet files are published, and how each file is checked.

Checksums are never guessed. torchvision's file names end in the first 8 hex digits of the file's SHA-256 (torch.hub
checks that prefix, ``check_hash``); the full digest is not published, so only the prefix is stored and verified.
timm's files live on the Hugging Face hub, whose file pages publish each file's full SHA-256 (its Git LFS object
id); those are stored whole. A file whose checksum was not found is listed with ``sha256=None`` and is not
downloaded without ``allow_unverified=True``.

Each entry maps one of our architectures and width multipliers to a file and to the layout and source name that
:mod:`mobilenet.weights.torch_import` converts; the resolution of a model name is free (the weights were trained at
224).
"""

from __future__ import annotations

from dataclasses import dataclass

from mobilenet.errors import MobilenetError
from mobilenet.models.registry import format_alpha

SOURCES = ("torchvision", "timm")
_HF = "https://huggingface.co/timm/{repo}/resolve/main/{file}"
_TORCHVISION = "https://download.pytorch.org/models/{file}"


@dataclass(frozen=True)
class WeightsFile:
    """One published weights file."""

    source: str  # "torchvision" or "timm": the layout its state dict follows
    arch: str  # our architecture
    alpha: float
    source_name: str  # the source library's model name, for the converter
    url: str
    filename: str  # the name in our cache (timm's files are all called model.safetensors)
    sha256: str | None  # the full digest, or a published prefix, or None when nothing is published
    checksum_note: str
    license: str

    @property
    def key(self) -> tuple[str, str, str]:
        return self.source, self.arch, format_alpha(self.alpha)


def _torchvision(arch: str, name: str, file: str, prefix: str) -> WeightsFile:
    return WeightsFile(
        "torchvision",
        arch,
        1.0,
        name,
        _TORCHVISION.format(file=file),
        f"torchvision-{file}",
        prefix,
        "SHA-256 prefix from the file name (torchvision publishes no full digest)",
        "BSD-3-Clause (torchvision)",
    )


def _timm(arch: str, alpha: float, name: str, repo: str, file: str, sha256: str | None) -> WeightsFile:
    note = "full SHA-256 published on the file's Hugging Face page" if sha256 else "no published checksum found"
    return WeightsFile(
        "timm",
        arch,
        alpha,
        name,
        _HF.format(repo=repo, file=file),
        f"timm-{repo}-{file}",
        sha256,
        note,
        "Apache-2.0 (model card)",
    )


FILES: tuple[WeightsFile, ...] = (
    _torchvision("mobilenet_v2", "mobilenet_v2", "mobilenet_v2-b0353104.pth", "b0353104"),
    _torchvision("mobilenet_v3_large", "mobilenet_v3_large", "mobilenet_v3_large-8738ca79.pth", "8738ca79"),
    _torchvision("mobilenet_v3_small", "mobilenet_v3_small", "mobilenet_v3_small-047dcff4.pth", "047dcff4"),
    _timm(
        "mobilenet_v1",
        1.0,
        "mobilenetv1_100",
        "mobilenetv1_100.ra4_e3600_r224_in1k",
        "model.safetensors",
        None,
    ),
    _timm(
        "mobilenet_v2",
        1.0,
        "mobilenetv2_100",
        "mobilenetv2_100.ra_in1k",
        "model.safetensors",
        "55ea4fb3a96010b933710ebf44fc965b070d5cd054d3f35e44f2d1320b4a714e",
    ),
    _timm(
        "mobilenet_v3_large",
        1.0,
        "mobilenetv3_large_100",
        "mobilenetv3_large_100.ra_in1k",
        "model.safetensors",
        "f425af34cc1cead2b5d6211f789a1f30b94835dc32f9c0fcc5a916e4fd2dde85",
    ),
    _timm(
        "mobilenet_v3_small",
        1.0,
        "mobilenetv3_small_100",
        "mobilenetv3_small_100.lamb_in1k",
        "pytorch_model.bin",  # the .bin's digest is the one published; it is read with weights_only=True
        "c66054da8dbd3453fecb5c3c842faef8e4e1fcdc71d68208cb577388ae191c5f",
    ),
    _timm(
        "mobilenet_v3_small",
        0.75,
        "mobilenetv3_small_075",
        "mobilenetv3_small_075.lamb_in1k",
        "model.safetensors",
        "c56c9ffc148d94301a477d5678e6802d0251b22ff23376c396eacd737edad0b7",
    ),
)


def find_file(source: str, arch: str, alpha: float) -> WeightsFile:
    """The published file for our ``arch`` at width ``alpha`` from ``source``, or an error listing what exists."""
    if source not in SOURCES:
        raise MobilenetError(f"unknown pretrained source {source!r}; use one of: {', '.join(SOURCES)}")
    for entry in FILES:
        if entry.key == (source, arch, format_alpha(alpha)):
            return entry
    available = ", ".join(f"{e.arch} {format_alpha(e.alpha)}" for e in FILES if e.source == source)
    raise MobilenetError(
        f"{source} publishes no {arch} weights at width {format_alpha(alpha)}; available from {source}: {available}"
    )
