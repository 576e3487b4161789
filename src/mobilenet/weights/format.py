"""Our weights format: a safetensors file whose metadata rebuilds the model and its preprocessing.

Metadata keys (all JSON strings, since safetensors metadata is ``str -> str``):
- ``mobilenet.format``: format version;
- ``mobilenet.config``: :class:`~mobilenet.models.ModelConfig` (architecture, options, preprocessing);
- ``mobilenet.class_names``: the label of each output, in order;
- ``mobilenet.source`` / ``mobilenet.license``: where the weights come from and under which terms.

Loading never unpickles anything: safetensors holds raw tensors only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from mobilenet.errors import MobilenetError
from mobilenet.fileio import as_path, atomic_path
from mobilenet.models.builder import MobileNet, ModelConfig

FORMAT_VERSION = "1"
# Files `mobilenet import` converts, and files `mobilenet export` writes: each gets its own advice.
IMPORTABLE_SUFFIXES = (".tflite", ".keras", ".h5", ".pth", ".pt", ".bin")
EXPORTED_SUFFIXES = (".onnx", ".pt2")
_PREFIX = "mobilenet."


def save_weights(
    model: MobileNet,
    path: str | os.PathLike[str],
    *,
    class_names: list[str] | None = None,
    source: str | None = None,
    license: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model``'s weights and everything needed to rebuild it, atomically."""
    target = as_path(path, "the weights file")
    if target.suffix.lower() != ".safetensors":
        raise MobilenetError(f"weights are saved as safetensors: name the file *.safetensors, got {path!r} "
                             "(mobilenet.export.export_model writes ONNX, TFLite, TorchScript and pt2)")
    class_names = class_names if class_names is not None else getattr(model, "class_names", None)
    _check_class_names(class_names, model.config.num_classes)
    info = dict(getattr(model, "weights_info", {}) or {})
    metadata = {
        _PREFIX + "format": FORMAT_VERSION,
        _PREFIX + "config": json.dumps(model.config.to_dict()),
        _PREFIX + "class_names": json.dumps(list(class_names) if class_names is not None else None),
        _PREFIX + "source": source or info.get("source") or "trained with mobilenet",
        _PREFIX + "license": license or info.get("license") or "unspecified",
        _PREFIX + "extra": json.dumps(extra or info.get("extra") or {}),
    }
    # safetensors refuses shared or non-contiguous storage; BN's num_batches_tracked is a real buffer we keep.
    tensors = {name: t.detach().to("cpu").contiguous().clone() for name, t in model.state_dict().items()}
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return target


def _check_class_names(class_names: Any, num_classes: int) -> None:
    """Names that do not match the classifier would only fail later, at load or predict time."""
    if class_names is None:
        return
    if not isinstance(class_names, (list, tuple)) or not all(isinstance(name, str) for name in class_names):
        raise MobilenetError("class_names must be a list of strings, one per class")
    if num_classes and len(class_names) != num_classes:
        raise MobilenetError(f"{len(class_names)} class names for a classifier of {num_classes} classes; "
                             "give one name per class (or reset_classifier to the right size)")


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The decoded metadata of a weights file, or a clear error if the file is not ours."""
    file = Path(path)
    if not file.is_file():
        raise MobilenetError(f"weights file not found: {file}")
    try:
        with safe_open(str(file), framework="pt") as handle:
            raw = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise MobilenetError(_not_ours(file, exc)) from None
    if _PREFIX + "config" not in raw:
        raise MobilenetError(
            f"{file} is a safetensors file but not mobilenet weights (no model config in its metadata); "
            "import foreign weights with `mobilenet import`"
        )
    try:
        config = ModelConfig.from_dict(_decoded(file, raw, "config", dict))
    except (TypeError, KeyError, AttributeError, MobilenetError) as exc:  # JSON, but not a config
        raise MobilenetError(f"{file}: its model config is damaged ({exc}); save or import the weights again") from None
    class_names = _decoded(file, raw, "class_names", list, default="null")
    if class_names is not None and not all(isinstance(name, str) for name in class_names):
        raise MobilenetError(f"{file}: its class names are damaged (not a list of strings); save the weights again")
    return {
        "format": raw.get(_PREFIX + "format"),
        "config": config,
        "class_names": class_names,
        "source": raw.get(_PREFIX + "source"),
        "license": raw.get(_PREFIX + "license"),
        "extra": _decoded(file, raw, "extra", dict, default="{}"),
    }


def _decoded(file: Path, raw: dict[str, str], key: str, kind: type, default: str | None = None) -> Any:
    """One JSON metadata entry of the expected kind (or null), or a one-line error naming the damaged entry."""
    text = raw.get(_PREFIX + key, default)
    try:
        value = json.loads(text)
        intact = value is None or isinstance(value, kind)
    except (TypeError, json.JSONDecodeError):
        intact = False
    if not intact:
        raise MobilenetError(f"{file}: metadata entry {_PREFIX + key} is damaged ({str(text)[:60]!r}); "
                             "save or import the weights again")
    return value


def load(path: str | os.PathLike[str], map_location: str | torch.device = "cpu", **overrides: Any) -> MobileNet:
    """Rebuild a ready model (eval mode) from a weights file written by :func:`save_weights`, or from a run
    folder (its best, else last, weights)."""
    path = resolve_weights(path)
    meta = read_metadata(path)
    config: ModelConfig = meta["config"]
    if overrides:
        config = config.replace(**overrides)
    model = MobileNet(config)
    from safetensors.torch import load_file

    state = load_file(str(path), device=str(map_location))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise MobilenetError(f"{path}: weights do not fit the model in its metadata ({_mismatch(exc)})") from None
    model.class_names = meta["class_names"]
    model.weights_info = {k: meta[k] for k in ("source", "license", "extra")}
    return model.to(map_location).eval()


def resolve_weights(path: str | Path) -> Path:
    """Accept a weights file or a run folder (its best, else last, weights)."""
    path = as_path(path, "the weights file or run folder")
    if path.is_dir():
        for name in ("best.safetensors", "last.safetensors"):
            if (path / name).is_file():
                return path / name
        raise MobilenetError(f"{path} has no best.safetensors or last.safetensors; pass a run folder or a weights file")
    if not path.exists():
        raise MobilenetError(f"checkpoint not found: {path}")
    return path


def _not_ours(file: Path, exc: Exception) -> str:
    suffix = file.suffix.lower()
    if suffix in IMPORTABLE_SUFFIXES:
        return (f"{file} is a {suffix} file, not mobilenet weights; convert it first: "
                f"mobilenet import {file} -o {file.stem}.safetensors")
    if suffix in EXPORTED_SUFFIXES:
        return f"{file} is an exported model; pass the .safetensors weights it was exported from"
    return f"{file} is not a safetensors file ({exc}); pass weights saved by mobilenet"


def _mismatch(exc: RuntimeError) -> str:
    """load_state_dict's multi-line report in one line: its first specific complaint."""
    lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
    return (lines[0] if lines else str(exc).strip())[:200]


def non_finite_tensors(model: torch.nn.Module) -> list[str]:
    """Names of the floating-point tensors holding NaN or infinity: such weights run, but predict nonsense."""
    return [name for name, tensor in model.state_dict().items()
            if tensor.is_floating_point() and not bool(tensor.isfinite().all())]
