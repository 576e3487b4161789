"""Quantization-aware fine-tuning to an int8 TFLite or ONNX file, for models whose post-training int8 loses too
much.

The flow is PyTorch's PT2E QAT with the same quantizer as the post-training TFLite export
(:func:`mobilenet.export.tflite_export.tflite_int8_quantizer`), so the fake-quantized graph trained here is
the graph the converter turns into int8 kernels:

1. BatchNorm folded and the V3 squeeze-excite gates rewritten (:func:`~mobilenet.export.tflite_export.int8_ready`);
   folding first means the fine-tuning trains exactly the weights that will be quantized;
2. ``torch.export`` with a dynamic batch, then ``prepare_qat_pt2e``: fake-quantize nodes on weights (per channel)
   and activations, their ranges tracked while training;
3. a few epochs of SGD at a small learning rate (cosine to zero) on the training folder;
4. ``convert_pt2e``, then the litert-torch converter (``.tflite``) or ``torch.onnx.export`` with the weight
   quantization folded into int8 initializers (``.onnx``, QDQ: onnxruntime runs every conv as QLinearConv).

The report compares the fp32 model, post-training int8 and QAT int8 on the validation images.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobilenet.data import build_dataloaders
from mobilenet.errors import MobilenetError
from mobilenet.export.accuracy import Int8Accuracy, int8_accuracy_on
from mobilenet.export.fold import fold_batchnorm
from mobilenet.export.images import load_batch, spread_sample
from mobilenet.export.metadata import export_metadata, write_sidecar
from mobilenet.export.runtimes import load_runner
from mobilenet.models.builder import MobileNet

CALIBRATION_IMAGES = 200


@dataclass
class QatSettings:
    epochs: int = 2
    lr: float = 1e-3
    momentum: float = 0.9
    batch_size: int = 32
    seed: int = 0
    val_fraction: float = 0.2
    train_scale: tuple[float, float] | None = None  # None: the data package's default; pass the run's own
    hflip: float = 0.5

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.lr <= 0 or self.batch_size < 1:
            raise MobilenetError(f"QAT needs epochs >= 1, lr > 0 and batch size >= 1 (got {self.epochs}, "
                                 f"{self.lr}, {self.batch_size})")


@dataclass
class QatReport:
    path: Path
    epochs: int
    seconds: float
    ptq: Int8Accuracy | None
    qat: Int8Accuracy
    losses: list[float]

    def to_dict(self) -> dict[str, object]:
        return {"path": str(self.path), "epochs": self.epochs, "seconds": round(self.seconds, 1),
                "ptq": self.ptq.to_dict() if self.ptq else None, "qat": self.qat.to_dict(), "losses": self.losses}

    def summary(self) -> str:
        kind = "TFLite" if self.path.suffix.lower() == ".tflite" else "ONNX"
        lines = [f"QAT int8 {kind} written to {self.path} ({self.epochs} epochs, {self.seconds:.0f} s)"]
        if self.ptq is not None:
            lines.append("post-training int8: " + self.ptq.summary())
        lines.append("quantization-aware int8: " + self.qat.summary())
        return "\n".join(lines)


def quantization_aware_finetune(
    model: MobileNet,
    train_dir: str | Path,
    output: str | Path,
    *,
    val_dir: str | Path | None = None,
    settings: QatSettings | None = None,
    compare_ptq: bool = True,
    quiet: bool = False,
) -> QatReport:
    """Fine-tune ``model`` with fake quantization on ``train_dir`` and write an int8 ``.tflite`` or ``.onnx``
    (by ``output``'s suffix)."""
    from torchao.quantization.pt2e import quantize_pt2e

    from mobilenet.export.tflite_export import int8_ready, tflite_int8_quantizer, write_tflite

    settings = settings or QatSettings()
    output = Path(output)
    if output.suffix.lower() not in (".tflite", ".onnx"):
        raise MobilenetError(f"QAT writes an int8 .tflite or .onnx file; {output} should end in one of them")
    start = time.perf_counter()
    model = model.eval()
    augmentation = {"hflip": settings.hflip}
    if settings.train_scale is not None:
        augmentation["train_scale"] = settings.train_scale
    bundle = build_dataloaders(train_dir, val_dir, preprocessing=model.preprocessing, batch_size=settings.batch_size,
                               val_fraction=settings.val_fraction, seed=settings.seed, **augmentation)
    if model.class_names is not None and list(model.class_names) != bundle.class_names:
        raise MobilenetError(f"class-count mismatch: the model's classes are not the folders of {train_dir}; "
                             "fine-tune on this data first (mobilenet finetune), then --qat")
    val_paths = [path for path, _ in bundle.val_loader.dataset.samples]
    val_labels = np.array([label for _, label in bundle.val_loader.dataset.samples])
    source = str(val_dir) if val_dir is not None else f"held-out split of {train_dir}"

    ptq = _post_training_baseline(model, train_dir, val_paths, val_labels, source, output) if compare_ptq else None

    torch.manual_seed(settings.seed)
    quantizer = tflite_int8_quantizer(qat=True, uint8_activations=output.suffix.lower() == ".onnx")
    size = model.config.resolution
    sample = (torch.randn(2, model.config.in_chans, size, size),)
    folded = int8_ready(fold_batchnorm(model))
    graph = torch.export.export(folded, sample, dynamic_shapes=({0: torch.export.Dim("batch", min=1)},)).module()
    prepared = quantize_pt2e.prepare_qat_pt2e(graph, quantizer)
    losses = _train(prepared, bundle.train_loader, settings, quiet)
    converted = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
    facts = {"quantization": "quantization-aware fine-tuning (PT2E)", "qat_epochs": settings.epochs}
    if output.suffix.lower() == ".onnx":
        from mobilenet.export.onnx_export import export_pt2e_onnx

        path = export_pt2e_onnx(converted, model, output, **facts)
    else:
        path = write_tflite(converted, output, (sample[0][:1],), quantizer)

    qat = int8_accuracy_on(model, load_runner(path), val_paths, val_labels, source)
    fmt = path.suffix.lower().lstrip(".")
    write_sidecar(path, export_metadata(model, format=fmt, int8=True, int8_accuracy=qat.to_dict(), **facts))
    return QatReport(path, settings.epochs, time.perf_counter() - start, ptq, qat, losses)


def _post_training_baseline(
    model: MobileNet, train_dir: str | Path, val_paths: list[Path], val_labels, source: str, output: Path  # noqa: ANN001
) -> Int8Accuracy:
    from mobilenet.export.images import folder_images
    from mobilenet.export.tflite_export import export_tflite

    calibration = load_batch(spread_sample(folder_images(train_dir), CALIBRATION_IMAGES), model.preprocessing)
    ptq_path = output.with_name(output.stem + "_ptq" + output.suffix)
    if output.suffix.lower() == ".onnx":
        from mobilenet.export.onnx_quant import export_int8_onnx

        export_int8_onnx(model, ptq_path, calibration)
    else:
        export_tflite(model, ptq_path, int8=True, calibration=calibration)
    return int8_accuracy_on(model, load_runner(ptq_path), val_paths, val_labels, source)


def _train(prepared: nn.Module, loader, settings: QatSettings, quiet: bool) -> list[float]:  # noqa: ANN001
    # The graph was exported from the folded eval model: no BatchNorm to switch, dropout already a no-op, so
    # training and inference run the same graph (fake quantization with ranges tracked on every batch).
    optimizer = torch.optim.SGD(prepared.parameters(), lr=settings.lr, momentum=settings.momentum)
    steps = max(1, settings.epochs * len(loader))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    for epoch in range(settings.epochs):
        total, count = 0.0, 0
        for images, labels, _skipped in loader:
            loss = loss_fn(prepared(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total, count = total + float(loss.detach()) * len(labels), count + len(labels)
        losses.append(total / max(count, 1))
        if not quiet:
            print(f"qat epoch {epoch + 1}/{settings.epochs}: loss {losses[-1]:.4f}", file=sys.stderr, flush=True)
    return losses
