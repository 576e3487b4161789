"""`mobilenet predict`: class names with probabilities for files, folders and globs.

Everything needed comes from the checkpoint: architecture, weights, class names and preprocessing.
"""

from __future__ import annotations

import glob
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from mobilenet.checks import is_integer
from mobilenet.data import eval_transform, is_image_file, load_rgb
from mobilenet.data.decode import ImageDecodeError
from mobilenet.errors import MobilenetError
from mobilenet.models.builder import MobileNet, config_of


@dataclass
class Prediction:
    path: str
    labels: list[str]
    probabilities: list[float]
    indices: list[int]
    error: str | None = None

    def to_dict(self) -> dict[str, object]:
        if self.error:
            return {"path": self.path, "error": self.error}
        return {
            "path": self.path,
            "top": [
                {"label": label, "index": index, "probability": round(prob, 6)}
                for label, index, prob in zip(self.labels, self.indices, self.probabilities)
            ],
        }


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files as given, folders searched recursively for images, globs expanded; sorted, no duplicates."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
        elif path.is_file():
            found.append(path)
        elif any(ch in item for ch in "*?["):
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True))
            found += [p for p in matches if p.is_file() and is_image_file(p)]
            if not matches:
                raise MobilenetError(f"no files match {item!r}")
        else:
            raise MobilenetError(f"input not found: {item}")
    unique = list(dict.fromkeys(found))
    if not unique:
        raise MobilenetError(f"no images found in {', '.join(inputs)}")
    return unique


def class_names_for(model: MobileNet, labels: list[str] | None, num_outputs: int) -> list[str]:
    names = labels if labels is not None else model.class_names
    if names is None:
        return [str(i) for i in range(num_outputs)]
    if len(names) == num_outputs - 1:
        names = ["background", *names]  # TF-slim's 1001-way heads with a 1000-line labels file
    if len(names) != num_outputs:
        raise MobilenetError(
            f"class-count mismatch: the model has {num_outputs} outputs but {len(names)} labels were given"
        )
    return list(names)


def inference_runner(
    model: MobileNet, images: int, batch_size: int, backend: str = "auto", precision: str = "fp32"
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model as predict runs it: ``eager`` fp32 is the model itself; otherwise the fast path (BN folded,
    channels_last, frozen or compiled). ``auto`` tries oneDNN Graph fusion, then plain TorchScript, then eager."""
    if backend == "eager" and precision == "fp32":
        return model.eval()
    from mobilenet.export.fast import fast_inference_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # under auto a missing backend is expected; the fallback is the answer
        return fast_inference_model(model, backend, batch_size, precision)


@torch.no_grad()
def predict(
    model: MobileNet,
    paths: list[Path],
    topk: int = 5,
    labels: list[str] | None = None,
    batch_size: int = 32,
    backend: str = "auto",
    precision: str = "fp32",
) -> list[Prediction]:
    paths = _check_request(model, paths, topk, labels, batch_size)
    model.eval()
    transform = eval_transform(model.preprocessing)
    batch_size = max(1, min(batch_size, len(paths)))
    run = inference_runner(model, len(paths), batch_size, backend, precision)
    results: list[Prediction] = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        tensors, good = [], []
        for path in chunk:
            try:
                tensors.append(transform(load_rgb(path)))
                good.append(path)
            except ImageDecodeError as exc:
                results.append(Prediction(str(path), [], [], [], error=str(exc)))
        if not tensors:
            continue
        probabilities = _run_padded(run, torch.stack(tensors), batch_size).float().softmax(dim=1)
        names = class_names_for(model, labels, probabilities.shape[1])
        k = min(topk, probabilities.shape[1])
        top = probabilities.topk(k, dim=1)
        for path, probs, indices in zip(good, top.values.tolist(), top.indices.tolist()):
            results.append(Prediction(str(path), [names[i] for i in indices], probs, indices))
    order = {str(p): i for i, p in enumerate(paths)}
    return sorted(results, key=lambda r: order[r.path])


def _check_request(
    model: MobileNet, paths: list[Path] | str | Path, topk: int, labels: list[str] | None, batch_size: int
) -> list[Path]:
    """One-line errors for what would otherwise fail deep inside (or, worse, quietly predict nonsense)."""
    config = config_of(model, "predict")
    if not config.include_top or config.features_only or config.num_classes == 0:
        raise MobilenetError("this model has no classifier (include_top=False, features_only or num_classes=0); "
                             "predict needs class scores")
    if config.in_chans != 3:
        raise MobilenetError(f"predict reads RGB images, but this model takes {config.in_chans} input channels")
    for name, value in (("topk", topk), ("batch_size", batch_size)):
        if not is_integer(value) or value < 1:
            raise MobilenetError(f"{name} must be an integer >= 1, got {value!r}")
    if labels is not None and (isinstance(labels, str) or not all(isinstance(name, str) for name in labels)):
        raise MobilenetError("labels must be a list of class names (read a file with fileio.read_label_file)")
    if isinstance(paths, (str, Path)):
        return [Path(paths)]  # one image; a str would otherwise be iterated character by character
    return list(paths)


def _run_padded(run: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor, size: int) -> torch.Tensor:
    """Pad a short last batch to the prepared size (a compiled model would otherwise compile again)."""
    count = batch.shape[0]
    if count < size:
        batch = torch.cat([batch, batch[-1:].expand(size - count, *batch.shape[1:])])
    return run(batch)[:count]
