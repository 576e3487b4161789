"""Run an exported file in its runtime behind one interface: ``runner(batch) -> logits`` on numpy NCHW.

Formats by suffix: ``.onnx`` (onnxruntime, or OpenVINO), ``.tflite`` (the ai-edge-litert interpreter),
``.pt`` TorchScript, ``.pt2`` torch.export. A missing runtime, a missing file or a corrupt file is a
one-line :class:`MobilenetError` naming the fix.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mobilenet.errors import MobilenetError
from mobilenet.export.quiet import native_stderr_held, quiet_converter

RUNTIMES_BY_SUFFIX = {
    ".onnx": ("onnxruntime", "openvino"),
    ".tflite": ("tflite",),
    ".pt": ("torchscript",),
    ".pt2": ("pt2",),
}
INSTALL_HINTS = {
    "onnxruntime": "pip install 'mobilenet[onnx]'",
    "openvino": "pip install 'mobilenet[openvino]'",
    "tflite": "pip install 'mobilenet[tflite]'",
}


@dataclass
class Runner:
    """A loaded model: ``runner(batch)`` maps float32 NCHW to float32 logits."""

    path: Path
    runtime: str
    threads: int | None
    run: Callable[[np.ndarray], np.ndarray]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.run(np.ascontiguousarray(batch, dtype=np.float32))


def default_runtime(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in RUNTIMES_BY_SUFFIX:
        known = ", ".join(RUNTIMES_BY_SUFFIX)
        raise MobilenetError(f"unknown export format {suffix or '(no suffix)'!r} for {path}; expected one of {known}")
    return RUNTIMES_BY_SUFFIX[suffix][0]


def load_runner(path: str | Path, runtime: str | None = None, threads: int | None = None) -> Runner:
    """Load ``path`` into ``runtime`` (default: the natural one for its format)."""
    path = Path(path)
    if not path.is_file():
        raise MobilenetError(f"exported model not found: {path}")
    runtime = runtime or default_runtime(path)
    allowed = RUNTIMES_BY_SUFFIX.get(path.suffix.lower(), ())
    if runtime not in allowed:
        raise MobilenetError(f"{path.name} cannot run in {runtime}; use one of: {', '.join(allowed)}")
    loader = _LOADERS[runtime]
    try:
        with native_stderr_held():  # runtimes announce themselves on stderr (XNNPACK's delegate banner)
            run = loader(path, threads)
    except MobilenetError:
        raise
    except Exception as exc:  # each runtime raises its own types for a damaged file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise MobilenetError(f"{path} could not be loaded by {runtime}; the file is corrupt or truncated ({first}); "
                             "export it again") from None
    return Runner(path=path, runtime=runtime, threads=threads, run=run)


def _require(module: str, runtime: str):  # noqa: ANN202 - returns a module
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MobilenetError(f"{runtime} is not installed; {INSTALL_HINTS.get(runtime, 'install it')}") from None


def _onnxruntime(path: Path, threads: int | None) -> Callable[[np.ndarray], np.ndarray]:
    ort = _require("onnxruntime", "onnxruntime")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})[0]


def compile_openvino(path: Path, threads: int | None, precision_hint: str = "f32"):  # noqa: ANN201
    """An OpenVINO CompiledModel on CPU with its inference precision pinned: on CPUs with bf16 units OpenVINO's
    default is bf16, so an fp32 graph would silently run (and be checked) in bf16."""
    ov = _require("openvino", "openvino")
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision_hint}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    core = ov.Core()
    return core.compile_model(core.read_model(str(path)), "CPU", config)


def openvino_run(compiled) -> Callable[[np.ndarray], np.ndarray]:  # noqa: ANN001 - an openvino CompiledModel
    request = compiled.create_infer_request()
    output = compiled.output(0)
    return lambda batch: np.array(request.infer({0: batch})[output])


def _openvino(path: Path, threads: int | None) -> Callable[[np.ndarray], np.ndarray]:
    return openvino_run(compile_openvino(path, threads))


def _tflite(path: Path, threads: int | None) -> Callable[[np.ndarray], np.ndarray]:
    interpreter_module = _require("ai_edge_litert.interpreter", "tflite")
    interpreter = interpreter_module.Interpreter(model_path=str(path), num_threads=threads or os.cpu_count())
    interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]
    target = interpreter.get_output_details()[0]
    shape = [tuple(source["shape"])]

    def run_batch(batch: np.ndarray) -> np.ndarray:
        if tuple(batch.shape) != shape[0]:
            interpreter.resize_tensor_input(source["index"], list(batch.shape), strict=False)
            interpreter.allocate_tensors()
            shape[0] = tuple(batch.shape)
        interpreter.set_tensor(source["index"], _quantize_input(batch, source))
        interpreter.invoke()
        return _dequantize_output(interpreter.get_tensor(target["index"]), target)

    def run(batch: np.ndarray) -> np.ndarray:
        try:
            return run_batch(batch)
        except (RuntimeError, ValueError):
            if batch.shape[0] == 1:
                raise
            # a graph converted with a fixed batch cannot always be resized; run image by image instead
            return np.concatenate([run_batch(batch[i : i + 1]) for i in range(batch.shape[0])])

    return run


def _quantize_input(batch: np.ndarray, details: dict) -> np.ndarray:
    """Integer-input TFLite graphs take ``round(x / scale) + zero_point``."""
    dtype = details["dtype"]
    if dtype == np.float32:
        return batch
    scale, zero_point = details["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(batch / scale) + zero_point, info.min, info.max).astype(dtype)


def _dequantize_output(values: np.ndarray, details: dict) -> np.ndarray:
    if values.dtype == np.float32:
        return values.copy()
    scale, zero_point = details["quantization"]
    return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)


def _torchscript(path: Path, threads: int | None) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    if threads:
        torch.set_num_threads(threads)
    module = torch.jit.load(str(path), map_location="cpu")
    return _torch_runner(module)


def _pt2(path: Path, threads: int | None) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    if threads:
        torch.set_num_threads(threads)
    with quiet_converter("torch.export", "torch._export"):  # a damaged file logs a traceback before raising
        module = torch.export.load(str(path)).module()
    return _torch_runner(module)


def _torch_runner(module) -> Callable[[np.ndarray], np.ndarray]:  # noqa: ANN001 - any callable module
    import torch

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(batch)).float().numpy()

    return run


_LOADERS: dict[str, Callable[[Path, int | None], Callable[[np.ndarray], np.ndarray]]] = {
    "onnxruntime": _onnxruntime,
    "openvino": _openvino,
    "tflite": _tflite,
    "torchscript": _torchscript,
    "pt2": _pt2,
}
