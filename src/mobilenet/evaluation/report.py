"""`mobilenet evaluate`: top-1/top-5, per-class precision/recall/F1 and a confusion matrix, as JSON and PNG."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from mobilenet.checks import is_integer
from mobilenet.data import ImageFolderDataset, collate_skip_bad, eval_transform, scan_image_folder
from mobilenet.errors import MobilenetError
from mobilenet.evaluation.metrics import EvalResult, evaluate_model
from mobilenet.fileio import as_path, atomic_path, atomic_write_text, dump_json
from mobilenet.models.builder import MobileNet
from mobilenet.weights.format import load, resolve_weights


@dataclass
class EvaluationReport:
    result: EvalResult
    class_names: list[str]
    json_path: Path | None = None
    confusion_png: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_samples": self.result.num_samples,
            "top1": self.result.top1,
            "top5": self.result.top5,
            "loss": self.result.loss,
            "skipped_files": self.result.skipped,
            "per_class": self.result.per_class(self.class_names),
            "confusion_matrix": self.result.confusion.tolist(),
            "class_names": self.class_names,
        }


def check_classes(model: MobileNet, folder_classes: list[str], data_dir: Path) -> None:
    """The folder must have exactly the classes the checkpoint was trained on, in the same order."""
    model_classes = model.class_names
    if model_classes is None:
        raise MobilenetError("the checkpoint has no class names; retrain or import it with labels")
    if len(model_classes) != len(folder_classes):
        raise MobilenetError(
            f"class-count mismatch: the checkpoint predicts {len(model_classes)} classes but {data_dir} has "
            f"{len(folder_classes)} class folders; evaluate on a folder with the training classes"
        )
    if list(model_classes) != list(folder_classes):
        differing = sorted(set(folder_classes) ^ set(model_classes))[:5]
        raise MobilenetError(
            f"class names of {data_dir} differ from the checkpoint's (e.g. {differing}); "
            "use folders named as the training classes"
        )


def evaluate_folder(
    checkpoint: str | Path,
    data_dir: str | Path,
    *,
    batch_size: int = 64,
    out_dir: str | Path | None = None,
    num_workers: int = 0,
) -> EvaluationReport:
    if not is_integer(batch_size) or batch_size < 1:
        raise MobilenetError(f"batch size must be an integer >= 1, got {batch_size!r}")
    model = load(resolve_weights(checkpoint))
    data_dir = as_path(data_dir, "the evaluation folder")
    scan = scan_image_folder(data_dir)
    check_classes(model, scan.class_names, data_dir)
    dataset = ImageFolderDataset(scan.samples, eval_transform(model.preprocessing))
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_skip_bad)
    result = evaluate_model(model, loader, len(scan.class_names))
    result.skipped += len(scan.skipped_files)
    if result.num_samples == 0:
        raise MobilenetError(
            f"no image in {data_dir} could be read ({result.skipped} files skipped as unreadable or not images); "
            "evaluate on a folder of JPEG/PNG images"
        )
    report = EvaluationReport(result, scan.class_names)
    if out_dir is not None:
        out = Path(out_dir)
        report.json_path = out / "evaluation.json"
        atomic_write_text(report.json_path, dump_json(report.to_dict()))
        report.confusion_png = plot_confusion(result.confusion, scan.class_names, out / "confusion_matrix.png")
    return report


def plot_confusion(confusion: np.ndarray, class_names: list[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(4.0, 0.45 * len(class_names) + 2)
    fig, axis = plt.subplots(figsize=(size, size))
    rows = confusion.sum(axis=1, keepdims=True)
    normalised = np.divide(confusion, rows, out=np.zeros(confusion.shape, dtype=float), where=rows > 0)
    axis.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(class_names))
    axis.set_xticks(ticks, class_names, rotation=60, ha="right")
    axis.set_yticks(ticks, class_names)
    axis.set(xlabel="predicted", ylabel="true", title="Confusion matrix (row-normalised, counts shown)")
    if len(class_names) <= 30:
        for (i, j), count in np.ndenumerate(confusion):
            if count:
                colour = "white" if normalised[i, j] > 0.5 else "black"
                axis.text(j, i, str(count), ha="center", va="center", fontsize=7, color=colour)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
