"""Labels and preprocessing travel with every exported file.

ONNX keeps them in ``metadata_props``; TorchScript and ``.pt2`` in their archive's extra files; every
format also gets a JSON sidecar (``model.onnx.json``), since TFLite has no simple place of its own.
Keys match the safetensors metadata of :mod:`mobilenet.weights.format`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from mobilenet.errors import MobilenetError
from mobilenet.fileio import atomic_write_text


def export_metadata(model: nn.Module, **extra: Any) -> dict[str, str]:
    """String-to-string metadata: model config (with preprocessing), class names, and export facts."""
    config = model.config
    metadata = {
        "mobilenet.config": json.dumps(config.to_dict()),
        "mobilenet.preprocessing": json.dumps(config.preprocessing.to_dict()),
        "mobilenet.class_names": json.dumps(getattr(model, "class_names", None)),
    }
    for key, value in extra.items():
        metadata[f"mobilenet.{key}"] = value if isinstance(value, str) else json.dumps(value)
    return metadata


def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".json")


def write_sidecar(path: str | Path, metadata: dict[str, str]) -> Path:
    target = sidecar_path(path)
    decoded = {key.removeprefix("mobilenet."): _maybe_json(value) for key, value in metadata.items()}
    atomic_write_text(target, json.dumps(decoded, indent=2) + "\n")
    return target


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The decoded sidecar of an exported file; a clear error if it is missing or not JSON."""
    target = sidecar_path(path)
    if not target.is_file():
        raise MobilenetError(
            f"{target} not found: exports keep their labels and preprocessing there; re-export with mobilenet "
            f"export, or for a file made elsewhere run mobilenet import {Path(path).name} and export that"
        )
    try:
        return json.loads(target.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise MobilenetError(f"{target} is not valid JSON ({exc.msg}); re-export the model") from None


def _maybe_json(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value
