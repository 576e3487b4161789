"""What ``mobilenet bench`` measures: a model name, a checkpoint or an exported file, turned into a runner
(``runner(float32 NCHW numpy batch)``) for one runtime and precision.

Runtimes: ``torch`` (eager), ``torch-compile`` (``torch.compile``, default inductor settings), ``torch-fast``
(our predict path, :func:`mobilenet.export.fast.fast_inference_model`), and for exported graphs
``onnxruntime``, ``openvino``, ``tflite``, ``torchscript``, ``pt2``. A model name or checkpoint is exported to
a temporary folder first when the runtime needs a file; int8 graphs are calibrated on random images, which is
fine for timing and meaningless for accuracy.

OpenVINO is loaded through :func:`mobilenet.export.runtimes.compile_openvino` with its precision pinned
(f32, or bf16 for ``--bf16``), and the benchmark notes when the CPU ran something else.
"""

from __future__ import annotations

import contextlib
import importlib.util
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mobilenet.errors import MobilenetError
from mobilenet.export.runtimes import INSTALL_HINTS
from mobilenet.models.builder import MobileNet, ModelConfig
from mobilenet.models.registry import config_from_name, model_name
from mobilenet.profiling.bench import NumpyRunner, random_batch
from mobilenet.profiling.cost import cost_of

TORCH_RUNTIMES = ("torch", "torch-compile", "torch-fast")
EXPORT_RUNTIMES = ("onnxruntime", "openvino", "tflite")
FILE_ONLY_RUNTIMES = ("torchscript", "pt2")
RUNTIMES = TORCH_RUNTIMES + EXPORT_RUNTIMES + FILE_ONLY_RUNTIMES
PRECISIONS = ("fp32", "int8", "bf16")
EXPORT_SUFFIXES = (".onnx", ".tflite", ".pt", ".pt2")
CALIBRATION_IMAGES = 8

_RUNTIME_MODULES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tflite": "ai_edge_litert"}
_OPENVINO_PRECISION = {"fp32": "f32", "int8": "f32", "bf16": "bf16"}


@dataclass
class Prepared:
    """A runner ready to be loaded (``load()``), with what the measurement needs to know about it."""

    model: str
    runtime: str
    precision: str
    config: ModelConfig
    mult_adds: int
    load: Callable[[], NumpyRunner]
    notes: list[str] = field(default_factory=list)

    @property
    def resolution(self) -> int:
        return self.config.resolution


def is_file_target(target: str) -> bool:
    """A path (existing, or ending like an export or checkpoint) rather than a model name."""
    path = Path(target)
    return path.suffix.lower() in EXPORT_SUFFIXES + (".safetensors",) or path.exists()


def default_runtime(target: str) -> str:
    suffix = Path(target).suffix.lower()
    if suffix in EXPORT_SUFFIXES:
        from mobilenet.export.runtimes import default_runtime as natural_runtime

        return natural_runtime(target)
    return "torch"


@contextlib.contextmanager
def prepare(
    target: str,
    runtime: str,
    precision: str = "fp32",
    *,
    threads: int,
    resolution: int | None = None,
    channels_last: bool = False,
    model: MobileNet | None = None,
) -> Iterator[Prepared]:
    """Resolve ``target`` (model name, checkpoint, run folder or exported file) into a :class:`Prepared`
    runner for ``runtime`` at ``precision``; exports live in a temporary folder until the block ends.

    ``model`` skips building: deploy benchmarks pass one random-weights model to every runtime.
    """
    _check_options(runtime, precision, channels_last)
    path = Path(target)
    with tempfile.TemporaryDirectory(prefix="mobilenet-bench-") as scratch:
        if model is None and path.suffix.lower() in EXPORT_SUFFIXES:
            yield _prepare_file(path, runtime, precision, threads, resolution)
            return
        if model is None:
            model = _load_model(target, resolution)
        yield _prepare_model(model, runtime, precision, threads, channels_last, Path(scratch))


def _check_options(runtime: str, precision: str, channels_last: bool) -> None:
    if runtime not in RUNTIMES:
        raise MobilenetError(f"unknown runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise MobilenetError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if precision == "int8" and runtime not in EXPORT_RUNTIMES:
        raise MobilenetError(f"--int8 needs --runtime {', '.join(EXPORT_RUNTIMES)} (not {runtime})")
    if precision == "bf16" and runtime != "openvino":
        raise MobilenetError(f"--bf16 needs --runtime openvino (not {runtime})")
    if channels_last and runtime not in ("torch", "torch-compile"):
        raise MobilenetError(f"--channels-last applies to --runtime torch and torch-compile (not {runtime})")


def require_runtime(runtime: str) -> None:
    """Fail before any export if the runtime's package is missing."""
    module = _RUNTIME_MODULES.get(runtime)
    if module is not None and importlib.util.find_spec(module.split(".")[0]) is None:
        raise MobilenetError(f"{runtime} is not installed; {INSTALL_HINTS[runtime]}")


def _load_model(target: str, resolution: int | None) -> MobileNet:
    if is_file_target(target):
        from mobilenet.weights.format import load, resolve_weights

        path = resolve_weights(target)
        if path.suffix.lower() != ".safetensors":
            raise MobilenetError(f"cannot benchmark {path}: pass a model name, a .safetensors checkpoint, a run "
                                 f"folder or an exported file ({', '.join(EXPORT_SUFFIXES)})")
        return load(path) if resolution is None else load(path, resolution=resolution)
    overrides = {} if resolution is None else {"resolution": resolution}
    return MobileNet(config_from_name(target, **overrides)).eval()


def _prepare_model(
    model: MobileNet, runtime: str, precision: str, threads: int, channels_last: bool, scratch: Path
) -> Prepared:
    config = model.config
    name = model_name(config.arch, config.width_multiplier, config.resolution)
    mult_adds = cost_of(config).mult_adds
    if runtime in FILE_ONLY_RUNTIMES:
        raise MobilenetError(f"--runtime {runtime} runs an exported file; for a model use torch, torch-compile or "
                             "torch-fast, or export it first")
    if runtime in TORCH_RUNTIMES:
        notes = ["channels_last"] if channels_last else []
        return Prepared(name, runtime, precision, config, mult_adds, _torch_loader(model, runtime, channels_last),
                        notes)
    require_runtime(runtime)
    path, notes = export_for(model, runtime, precision, scratch)
    prepared = _prepare_file(path, runtime, precision, threads, None, config=config)
    prepared.notes[:0] = notes
    return prepared


def _prepare_file(
    path: Path, runtime: str, precision: str, threads: int, resolution: int | None, config: ModelConfig | None = None
) -> Prepared:
    from mobilenet.export.runtimes import RUNTIMES_BY_SUFFIX

    if not path.is_file():
        raise MobilenetError(f"exported model not found: {path}")
    allowed = RUNTIMES_BY_SUFFIX[path.suffix.lower()]
    if runtime not in allowed:
        raise MobilenetError(f"{path.name} cannot run in {runtime}; use --runtime {' or '.join(allowed)}")
    notes: list[str] = []
    if config is None:  # a file the user passed: it is measured as exported
        from mobilenet.export.metadata import read_sidecar

        if precision == "int8":
            raise MobilenetError(f"{path.name} is measured as it was exported; --int8 applies to a model name or "
                                 "checkpoint (bench exports and quantizes it)")
        sidecar = read_sidecar(path)
        if "config" not in sidecar:
            raise MobilenetError(f"{path}.json has no model config; re-export the model")
        config = ModelConfig.from_dict(sidecar["config"])
        if resolution and resolution != config.resolution:
            raise MobilenetError(f"{path.name} was exported at {config.resolution}x{config.resolution}; "
                                 "--resolution cannot change it (export again at that size)")
        if str(sidecar.get("int8", "")).lower() == "true":
            precision = "int8"
        notes.append(f"exported file {path.name}")
    name = model_name(config.arch, config.width_multiplier, config.resolution)
    return Prepared(name, runtime, precision, config, cost_of(config).mult_adds,
                    _file_loader(path, runtime, precision, threads, notes), notes)


def export_for(model: MobileNet, runtime: str, precision: str, folder: Path) -> tuple[Path, list[str]]:
    """Export ``model`` into ``folder`` in the format ``runtime`` reads; int8 is calibrated on random images."""
    int8 = precision == "int8"
    notes = [f"int8 calibrated on {CALIBRATION_IMAGES} random N(0,1) images (timing only)"] if int8 else []
    calibration = random_batch(CALIBRATION_IMAGES, model.config.resolution, model.config.in_chans, seed=1)
    if runtime in ("onnxruntime", "openvino") and int8:
        from mobilenet.export.onnx_quant import export_int8_onnx

        return export_int8_onnx(model, folder / "model_int8.onnx", calibration), notes
    if runtime in ("onnxruntime", "openvino"):
        from mobilenet.export.onnx_export import export_onnx

        return export_onnx(model, folder / "model.onnx"), notes
    if runtime == "tflite":
        from mobilenet.export.tflite_export import export_tflite

        target = folder / ("model_int8.tflite" if int8 else "model.tflite")
        return export_tflite(model, target, int8=int8, calibration=calibration if int8 else None), notes
    raise MobilenetError(f"no exporter for runtime {runtime}")


def fast_model(model: MobileNet) -> torch.nn.Module:
    """Our fast predict path (BatchNorm folded, channels_last, frozen/compiled where that works)."""
    from mobilenet.export.fast import fast_inference_model

    return fast_inference_model(model)


def _torch_loader(model: MobileNet, runtime: str, channels_last: bool) -> Callable[[], NumpyRunner]:
    def load() -> NumpyRunner:
        module: torch.nn.Module = model.eval()
        if channels_last:
            module = module.to(memory_format=torch.channels_last)
        if runtime == "torch-compile":
            module = torch.compile(module)  # compiles on the first call: warm-up absorbs it
        elif runtime == "torch-fast":
            module = fast_model(model)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format

        def run(batch: np.ndarray) -> torch.Tensor:
            with torch.inference_mode():
                return module(torch.from_numpy(batch).contiguous(memory_format=memory_format))

        return run

    return load


def _file_loader(
    path: Path, runtime: str, precision: str, threads: int, notes: list[str]
) -> Callable[[], NumpyRunner]:
    if runtime == "openvino":
        return lambda: openvino_runner(path, threads, precision, notes)
    from mobilenet.export.runtimes import load_runner

    return lambda: load_runner(path, runtime, threads)


def openvino_runner(path: Path, threads: int, precision: str, notes: list[str] | None = None) -> NumpyRunner:
    """OpenVINO on CPU with the inference precision pinned (f32 for fp32 and int8 graphs, bf16 on request)."""
    from mobilenet.export.runtimes import compile_openvino, openvino_run

    require_runtime("openvino")
    hint = _OPENVINO_PRECISION[precision]
    try:
        compiled = compile_openvino(path, threads, hint)
    except Exception as exc:  # OpenVINO raises its own types for a graph it cannot compile
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise MobilenetError(f"OpenVINO could not compile {path.name} ({first})") from None
    effective = "bf16" if "bf16" in _precision_text(compiled) or "bfloat16" in _precision_text(compiled) else "f32"
    if notes is not None and effective != hint:
        notes.append(f"OpenVINO ran {effective} inference although {hint} was asked for (CPU support)")
    run = openvino_run(compiled)
    return lambda batch: run(np.ascontiguousarray(batch, dtype=np.float32))


def _precision_text(compiled) -> str:  # noqa: ANN001 - an openvino CompiledModel
    return str(compiled.get_property("INFERENCE_PRECISION_HINT")).lower()
