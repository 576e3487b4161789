"""``export_model``: one call from a trained model to a checked deployment file (the `mobilenet export` command)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from mobilenet.errors import MobilenetError
from mobilenet.export.accuracy import Int8Accuracy, int8_accuracy
from mobilenet.export.images import calibration_batch, generated_images
from mobilenet.export.metadata import export_metadata, sidecar_path, write_sidecar
from mobilenet.export.runtimes import load_runner
from mobilenet.export.verify import ExportCheckError, ParityCheck, check_parity
from mobilenet.fileio import as_path, make_output_folder, refuse_folder
from mobilenet.models.builder import config_of
from mobilenet.weights.format import non_finite_tensors

FORMATS = ("onnx", "tflite", "torchscript", "pt2")
SUFFIXES = {"onnx": ".onnx", "tflite": ".tflite", "torchscript": ".pt", "pt2": ".pt2"}
INT8_FORMATS = ("onnx", "tflite")
CHECK_IMAGES = 32


@dataclass
class ExportResult:
    path: Path
    format: str
    int8: bool
    seconds: float
    size_bytes: int
    check: ParityCheck
    accuracy: Int8Accuracy | None
    sidecar: Path

    def to_dict(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "format": self.format,
            "int8": self.int8,
            "seconds": round(self.seconds, 2),
            "size_bytes": self.size_bytes,
            "check": self.check.to_dict(),
            "accuracy": self.accuracy.to_dict() if self.accuracy else None,
            "sidecar": str(self.sidecar),
        }


def default_output(source: Path, fmt: str, int8: bool) -> Path:
    return source.with_name(source.stem + ("_int8" if int8 else "") + SUFFIXES[fmt])


def validate_request(fmt: str, int8: bool, calibration: str | Path | None) -> None:
    if fmt not in FORMATS:
        raise MobilenetError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if int8 and fmt not in INT8_FORMATS:
        raise MobilenetError(f"--int8 is available for {' and '.join(INT8_FORMATS)}, not {fmt}")
    if int8 and calibration is None:
        raise MobilenetError("--int8 needs --calibration FOLDER (a few hundred images like the ones you will run on)")


def export_model(
    model: nn.Module,
    output: str | Path,
    fmt: str,
    *,
    int8: bool = False,
    calibration: str | Path | None = None,
    calibration_images: int = 200,
    validation: str | Path | None = None,
) -> ExportResult:
    """Export, then check the file in its runtime against ``model``; a failed check raises.

    Real images for the check come from ``validation`` (else ``calibration``); with ``int8`` the accuracy
    report (fp32 vs int8 top-1 and agreement) is computed on ``validation`` (else on ``calibration``).
    """
    validate_request(fmt, int8, calibration)
    config = config_of(model, "export")
    if config.features_only:
        raise MobilenetError("a features_only model returns a list of feature maps, which export does not "
                             "support; export the classifier, or a backbone with include_top=False and pooling")
    model = model.eval()
    pre = config.preprocessing
    output = as_path(output, "the export's output file")
    if output.suffix.lower() != SUFFIXES[fmt]:
        raise MobilenetError(f"output {output} should end in {SUFFIXES[fmt]} for format {fmt}")
    _check_writable(output)
    require_finite_weights(model)
    calib = calibration_batch(calibration, pre, calibration_images) if calibration is not None else None
    check_source = validation if validation is not None else calibration
    if check_source is not None:
        check_images, image_source = calibration_batch(check_source, pre, CHECK_IMAGES), "real images"
    else:
        check_images, image_source = generated_images(pre), "generated shape images (pass --val for your own)"
    # The file is written and checked under a staging name: a failed check must not replace a good export.
    staging = output.with_name(f".{output.stem}.unchecked{output.suffix}")
    try:
        start = time.perf_counter()
        _write(model, staging, fmt, int8, calib)
        seconds = time.perf_counter() - start
        runner = load_runner(staging, threads=None)
        check = check_parity(model, runner, check_images, int8=int8, image_source=image_source)
        # Without --val the calibration folder stands in: a biased report is better than none for an int8 file.
        accuracy = None
        if int8:
            accuracy = int8_accuracy(model, runner, validation or calibration,
                                     max_images=None if validation else calibration_images)
        facts = {"format": fmt, "int8": int8, "check": check.to_dict()}
        if accuracy is not None:
            facts["int8_accuracy"] = accuracy.to_dict()
        # The sidecar first: if it cannot be written, the previous export stays whole.
        sidecar = write_sidecar(output, export_metadata(model, **facts))
        os.replace(staging, output)
    except ExportCheckError as exc:
        raise MobilenetError(f"{output.name}: {exc}; {_check_hint(int8, output)}") from None
    finally:
        staging.unlink(missing_ok=True)
    return ExportResult(output, fmt, int8, seconds, output.stat().st_size, check, accuracy, sidecar)


def _check_writable(output: Path) -> None:
    """Before minutes of conversion: the file, its sidecar and their folder must be usable."""
    for target in (output, sidecar_path(output)):
        refuse_folder(target)
    make_output_folder(output.parent)


def require_finite_weights(model: nn.Module) -> None:
    """NaN or infinite weights export "fine" and fail the check as if the exporter were wrong; say what it is."""
    bad = non_finite_tensors(model)
    if bad:
        raise MobilenetError(f"the model has NaN or infinite values in {len(bad)} tensors (first: {bad[0]}); "
                             "these weights cannot be deployed: retrain, or export an earlier checkpoint")


def _check_hint(int8: bool, output: Path) -> str:
    kept = f"the file was not written ({output.name} is unchanged)" if output.exists() else "no file was written"
    if int8:
        return (f"{kept}; calibrate on more images like the ones you will run on (--calibration-images), "
                "fine-tune with `mobilenet finetune --qat`, or export fp32")
    return f"{kept}; an fp32 mismatch is a bug in the exporter or the runtime, please report it"


def _write(model: nn.Module, output: Path, fmt: str, int8: bool, calibration: np.ndarray | None) -> None:
    if fmt == "onnx" and int8:
        from mobilenet.export.onnx_quant import export_int8_onnx

        export_int8_onnx(model, output, calibration)
    elif fmt == "onnx":
        from mobilenet.export.onnx_export import export_onnx

        export_onnx(model, output)
    elif fmt == "tflite":
        from mobilenet.export.tflite_export import export_tflite

        export_tflite(model, output, int8=int8, calibration=calibration)
    elif fmt == "torchscript":
        from mobilenet.export.torch_export import export_torchscript

        export_torchscript(model, output)
    else:
        from mobilenet.export.torch_export import export_pt2

        export_pt2(model, output)
