"""Post-training static int8 quantization of an ONNX graph with onnxruntime's tools (QDQ, per-channel weights)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from torch import nn

from mobilenet.errors import MobilenetError
from mobilenet.export.quiet import quiet_converter
from mobilenet.fileio import atomic_path


def export_int8_onnx(model: nn.Module, path: str | Path, calibration: np.ndarray) -> Path:
    """The whole int8 ONNX path: export the int8-friendly fp32 graph to a scratch file, then quantize it."""
    from mobilenet.export.onnx_export import export_onnx

    with tempfile.TemporaryDirectory() as scratch:
        fp32 = export_onnx(model, Path(scratch) / "fp32.onnx", quant_friendly=True)
        return quantize_onnx(fp32, path, calibration)


def quantize_onnx(fp32_path: str | Path, out_path: str | Path, calibration: np.ndarray) -> Path:
    """Quantize ``fp32_path`` to int8 calibrated on ``calibration`` (float32 NCHW, already preprocessed).

    Weights are int8 per output channel, activations uint8 per tensor (the layout onnxruntime's x86 kernels
    are fastest with), ranges by MinMax over the calibration images.
    """
    try:
        import onnx
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise MobilenetError("int8 ONNX needs onnxruntime; pip install 'mobilenet[onnx]'") from None
    if calibration.ndim != 4 or len(calibration) == 0:
        raise MobilenetError("calibration needs at least one image (an NCHW batch)")
    input_name = onnx.load(str(fp32_path), load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration[i : i + 1] for i in range(len(calibration)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {input_name: np.ascontiguousarray(batch, dtype=np.float32)}

    target = Path(out_path)
    metadata = {p.key: p.value for p in onnx.load(str(fp32_path)).metadata_props}
    with tempfile.TemporaryDirectory() as scratch, quiet_converter():
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantized = Path(scratch) / "int8.onnx"
        quantize_static(
            str(prepared),
            str(quantized),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        proto = onnx.load(str(quantized))
    del proto.metadata_props[:]
    metadata["mobilenet.int8"] = "true"
    metadata["mobilenet.calibration_images"] = str(len(calibration))
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    with atomic_path(target) as tmp:
        onnx.save(proto, str(tmp))
    return target
