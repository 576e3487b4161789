"""Classification metrics from one pass over a loader: top-k accuracy, per-class P/R/F1, confusion matrix."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class EvalResult:
    num_samples: int
    loss: float
    top1: float  # percent
    top5: float  # percent
    confusion: np.ndarray  # rows: true class, columns: predicted class
    skipped: int = 0

    def per_class(self, class_names: list[str]) -> list[dict[str, float | str | int]]:
        """Precision, recall and F1 of each class from the confusion matrix."""
        true_positive = np.diag(self.confusion).astype(float)
        predicted = self.confusion.sum(axis=0).astype(float)
        actual = self.confusion.sum(axis=1).astype(float)
        precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
        recall = np.divide(true_positive, actual, out=np.zeros_like(true_positive), where=actual > 0)
        denominator = precision + recall
        f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)
        return [
            {"class": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
            for name, p, r, f, n in zip(class_names, precision, recall, f1, actual)
        ]


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    batches: Iterable,
    num_classes: int,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    channels_last: bool = False,
) -> EvalResult:
    """Run ``model`` over ``(images, labels[, skipped])`` batches and accumulate the metrics."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    loss_sum, correct1, correct5, count, skipped = 0.0, 0, 0, 0, 0
    k = min(5, num_classes)
    for batch in batches:
        images, labels = batch[0], batch[1]
        skipped += int(batch[2]) if len(batch) > 2 else 0
        if labels.numel() == 0:
            continue
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = labels.to(device)
        with autocast_context(device, precision):
            logits = model(images)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        topk = logits.topk(k, dim=1).indices
        correct1 += (topk[:, 0] == labels).sum().item()
        correct5 += (topk == labels[:, None]).any(dim=1).sum().item()
        np.add.at(confusion, (labels.cpu().numpy(), topk[:, 0].cpu().numpy()), 1)
        count += labels.numel()
    model.train(was_training)
    if count == 0:
        return EvalResult(0, float("nan"), float("nan"), float("nan"), confusion, skipped)
    return EvalResult(count, loss_sum / count, 100.0 * correct1 / count, 100.0 * correct5 / count, confusion, skipped)
