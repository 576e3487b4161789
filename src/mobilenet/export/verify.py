"""Every export is checked the moment it is written: the file, run in its own runtime, against PyTorch."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from mobilenet.errors import MobilenetError
from mobilenet.export.runtimes import Runner

FP32_TOLERANCE = 1e-4
INT8_MIN_AGREEMENT = 0.9  # on the check images; the real accuracy report is separate (accuracy.py)


@dataclass
class ParityCheck:
    runtime: str
    int8: bool
    images: int
    max_abs_error_images: float | None
    max_abs_error_random: float
    top1_agreement_images: float | None
    tolerance: float | None
    passed: bool
    image_source: str = "real images"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def reference_logits(model: nn.Module, batch: np.ndarray, chunk: int = 32) -> np.ndarray:
    model = model.eval()
    with torch.inference_mode():
        outs = [model(torch.from_numpy(batch[i : i + chunk])).float().numpy() for i in range(0, len(batch), chunk)]
    return np.concatenate(outs)


def run_in_chunks(runner: Runner, batch: np.ndarray, chunk: int = 8) -> np.ndarray:
    return np.concatenate([runner(batch[i : i + chunk]) for i in range(0, len(batch), chunk)])


class ExportCheckError(MobilenetError):
    """The exported file does not reproduce the PyTorch model within the targets."""


def check_parity(
    model: nn.Module,
    runner: Runner,
    images: np.ndarray | None,
    *,
    int8: bool,
    seed: int = 0,
    image_source: str = "real images",
) -> ParityCheck:
    """Compare on real images (when given) and on random input; raise :class:`MobilenetError` on failure.

    fp32 must match within :data:`FP32_TOLERANCE` (max abs error of the logits). int8 cannot: it must give
    finite outputs and agree with fp32 on the top-1 class of at least :data:`INT8_MIN_AGREEMENT` of the images.
    """
    config = model.config
    generator = np.random.default_rng(seed)
    noise = generator.standard_normal((2, config.in_chans, config.resolution, config.resolution)).astype(np.float32)
    random_error = float(np.abs(run_in_chunks(runner, noise) - reference_logits(model, noise)).max())
    image_error = agreement = None
    if images is not None and len(images):
        got, want = run_in_chunks(runner, images), reference_logits(model, images)
        image_error = float(np.abs(got - want).max())
        agreement = float((got.argmax(1) == want.argmax(1)).mean())
    errors = [e for e in (random_error, image_error) if e is not None]
    if int8:
        passed = all(np.isfinite(errors)) and (agreement is None or agreement >= INT8_MIN_AGREEMENT)
    else:
        passed = max(errors) <= FP32_TOLERANCE
    check = ParityCheck(
        runtime=runner.runtime,
        int8=int8,
        images=0 if images is None else len(images),
        max_abs_error_images=image_error,
        max_abs_error_random=random_error,
        top1_agreement_images=agreement,
        tolerance=None if int8 else FP32_TOLERANCE,
        passed=passed,
        image_source=image_source,
    )
    if not passed:
        raise ExportCheckError(f"export check failed in {runner.runtime}: {describe(check)}")
    return check


def describe(check: ParityCheck) -> str:
    parts = [f"max abs error {check.max_abs_error_random:.2e} on random input"]
    if check.max_abs_error_images is not None:
        parts.append(f"{check.max_abs_error_images:.2e} on {check.images} {check.image_source}")
    if check.top1_agreement_images is not None:
        parts.append(f"top-1 agreement {check.top1_agreement_images:.1%}")
    if check.tolerance is not None:
        parts.append(f"tolerance {check.tolerance:.0e}")
    return ", ".join(parts)
