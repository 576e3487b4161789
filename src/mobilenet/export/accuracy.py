"""The accuracy cost of int8: fp32 top-1, int8 top-1 and their top-1 agreement on a validation folder."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from torch import nn

from mobilenet.data import scan_image_folder
from mobilenet.errors import MobilenetError
from mobilenet.export.images import folder_images, load_batch, spread_sample
from mobilenet.export.runtimes import Runner
from mobilenet.export.verify import reference_logits, run_in_chunks


@dataclass
class Int8Accuracy:
    folder: str
    images: int
    labelled: bool
    fp32_top1: float | None
    int8_top1: float | None
    top1_agreement: float
    drop_points: float | None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def summary(self) -> str:
        text = f"int8 vs fp32 on {self.images} images of {self.folder}: top-1 agreement {self.top1_agreement:.2%}"
        if self.labelled:
            text += f", fp32 top-1 {self.fp32_top1:.2%}, int8 top-1 {self.int8_top1:.2%} "
            text += f"(drop {self.drop_points:+.2f} points)"
        return text


def labelled_images(folder: str | Path, class_names: list[str] | None) -> tuple[list[Path], np.ndarray | None]:
    """Images with labels (indices into ``class_names``) when the folder's classes are the model's; else no labels."""
    try:
        scan = scan_image_folder(folder)
    except MobilenetError:
        return folder_images(folder), None
    if not class_names or not set(scan.class_names) <= set(class_names):
        return [path for path, _ in scan.samples], None
    index = {name: i for i, name in enumerate(class_names)}
    paths = [path for path, _ in scan.samples]
    labels = np.array([index[scan.class_names[label]] for _, label in scan.samples])
    return paths, labels


def int8_accuracy(
    model: nn.Module, int8_runner: Runner, folder: str | Path, *, batch_size: int = 64, max_images: int | None = None
) -> Int8Accuracy:
    """Run the PyTorch fp32 model and the int8 export over every image of ``folder`` (or ``max_images`` of them,
    evenly spread), in batches."""
    paths, labels = labelled_images(folder, getattr(model, "class_names", None))
    if max_images is not None:
        keep = spread_sample(list(range(len(paths))), max_images)
        paths = [paths[i] for i in keep]
        labels = labels[keep] if labels is not None else None
    return int8_accuracy_on(model, int8_runner, paths, labels, str(folder), batch_size=batch_size)


def int8_accuracy_on(
    model: nn.Module,
    int8_runner: Runner,
    paths: list[Path],
    labels: np.ndarray | None,
    source: str,
    *,
    batch_size: int = 64,
) -> Int8Accuracy:
    """:func:`int8_accuracy` over given images (``labels`` index the model's classes, or ``None``)."""
    fp32_pred, int8_pred = [], []
    for start in range(0, len(paths), batch_size):
        batch = load_batch(paths[start : start + batch_size], model.config.preprocessing)
        fp32_pred.append(reference_logits(model, batch).argmax(1))
        int8_pred.append(run_in_chunks(int8_runner, batch).argmax(1))
    fp32, int8 = np.concatenate(fp32_pred), np.concatenate(int8_pred)
    labelled = labels is not None and len(labels) == len(fp32)  # undecodable files break the pairing
    fp32_top1 = float((fp32 == labels).mean()) if labelled else None
    int8_top1 = float((int8 == labels).mean()) if labelled else None
    return Int8Accuracy(
        folder=source,
        images=len(fp32),
        labelled=labelled,
        fp32_top1=fp32_top1,
        int8_top1=int8_top1,
        top1_agreement=float((fp32 == int8).mean()),
        drop_points=100 * (fp32_top1 - int8_top1) if labelled else None,
    )
