"""Import Google's TFLite MobileNets (TF-slim, Coral, Keras conversions) into our float model.

A ``.tflite`` file is read with the official flatbuffer bindings of ``ai-edge-litert``; its operators are then
matched, following the data flow, against a model built from our own tables. The variant (version, width,
resolution, classes) is recognised by trying the architectures whose depthwise-conv count fits the graph and
keeping the one whose every operator and tensor shape matches; when none does, the error names the first
operator of the closest candidate that does not fit.

What a TFLite graph holds and how it lands in our model:

- Weights, quantized or not, are dequantized to float: ``(q - zero_point) * scale``, per tensor (TF1
  quantization-aware training, uint8) or per channel along ``quantized_dimension`` (TF2 post-training, int8).
- BatchNorm is folded into the conv's weights and bias. Our convs keep a BatchNorm, so it is set to the
  identity (gamma 1, mean 0, variance ``1 - eps`` so that ``var + eps == 1``) with beta holding the folded bias.
- TF's SAME padding is our ``padding="tf_same"``; an explicit PAD followed by a VALID conv (Keras) is accepted
  when it pads exactly as SAME would.
- Activations may be fused into an op (RELU6), be ops of their own (HARD_SWISH) or be spelled out with
  ADD/MUL/RELU6 (hard-sigmoid); each run of element-wise ops is evaluated numerically and compared with the
  activation our model uses there, so any spelling of the same function is accepted.
- The graph's input quantization (or a rescaling at its start) tells which pixel range the network expects;
  it becomes the model's :class:`~mobilenet.models.Preprocessing`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mobilenet.errors import MobilenetError
from mobilenet.fileio import read_label_file
from mobilenet.models.builder import MobileNet
from mobilenet.models.layers import ConvBnAct, DepthwiseSeparable, InvertedResidual, SqueezeExcite
from mobilenet.models.preprocessing import INCEPTION_MEAN, INCEPTION_STD, Preprocessing
from mobilenet.models.registry import (
    RELEASED_MODELS,
    create_model,
)
from mobilenet.models.specs import ARCHITECTURES, ArchSpec, LayerKind
from mobilenet.weights.candidates import Candidate, search_fitting_model, width_candidates

LICENSE_NOTE = (
    "as distributed with the source file; Google's MobileNet TFLite releases (TF-slim, Coral) are under the "
    "Apache License 2.0"
)
_DTYPES = {
    "FLOAT32": np.dtype("<f4"),
    "FLOAT16": np.dtype("<f2"),
    "FLOAT64": np.dtype("<f8"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "INT16": np.dtype("<i2"),
    "INT8": np.dtype("i1"),
    "UINT8": np.dtype("u1"),
}
_SAME, _VALID = 0, 1  # tflite Padding enum
_IDENTITY_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})  # change the number format, not the real values
_HEAD_IDENTITY_OPS = _IDENTITY_OPS | {"RESHAPE", "SQUEEZE"}  # [1,1,1,C] <-> [1,C] is harmless after pooling
_TAIL_OPS = _HEAD_IDENTITY_OPS | {"SOFTMAX"}


# ----------------------------------------------------------------------------------------------------------
# Reading the flatbuffer
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TfliteTensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str  # TFLite's TensorType name: UINT8, INT8, FLOAT32, ...
    data: np.ndarray | None  # raw constant values in ``dtype``; None for activations
    scale: np.ndarray | None
    zero_point: np.ndarray | None
    quantized_dimension: int

    @property
    def quantized(self) -> bool:
        return self.scale is not None and self.scale.size > 0

    def real_value(self, q: np.ndarray) -> np.ndarray:
        """What quantized values ``q`` of this tensor stand for."""
        if not self.quantized:
            return q.astype(np.float64)
        return dequantize(q, self.scale, self.zero_point, self.quantized_dimension)  # type: ignore[arg-type]


@dataclass(frozen=True)
class TfliteOp:
    index: int
    type: str  # BuiltinOperator name: CONV_2D, DEPTHWISE_CONV_2D, ...
    inputs: tuple[int, ...]  # -1 marks an omitted optional input (a conv without bias)
    outputs: tuple[int, ...]
    options: dict[str, Any]

    @property
    def fused_activation(self) -> str:
        return str(self.options.get("fusedActivationFunction", "NONE"))


@dataclass
class TfliteGraph:
    """The main subgraph of a TFLite model: tensors and operators in execution order."""

    source: str
    tensors: list[TfliteTensor]
    ops: list[TfliteOp]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    producers: dict[int, TfliteOp] = field(default_factory=dict)
    consumers: dict[int, list[TfliteOp]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for op in self.ops:
            for t in op.outputs:
                self.producers[t] = op
            for t in op.inputs:
                if t >= 0:
                    self.consumers.setdefault(t, []).append(op)

    def tensor_name(self, index: int) -> str:
        """A readable name: TF1 converters join every fused op's name with ';', the first is the layer's."""
        name = self.tensors[index].name.split(";")[0]
        return name if len(name) <= 100 else name[:97] + "..."

    def is_constant(self, index: int) -> bool:
        if index < 0:
            return False
        if self.tensors[index].data is not None:
            return True
        producer = self.producers.get(index)  # float16 weights reach their op through a DEQUANTIZE
        return producer is not None and producer.type == "DEQUANTIZE" and self.is_constant(producer.inputs[0])

    def constant(self, index: int) -> np.ndarray:
        """A constant tensor's real values, dequantized to float32."""
        tensor = self.tensors[index]
        if tensor.data is None:
            producer = self.producers.get(index)
            if producer is None or producer.type != "DEQUANTIZE":
                raise MobilenetError(f"{self.source}: tensor {index} '{tensor.name}' is not a constant")
            return self.constant(producer.inputs[0])
        if tensor.quantized and tensor.dtype not in ("FLOAT32", "FLOAT16"):
            return tensor.real_value(tensor.data).astype(np.float32)
        return tensor.data.astype(np.float32)

    def describe(self, op: TfliteOp) -> str:
        name = self.tensor_name(op.outputs[0]) if op.outputs else ""
        return f"op {op.index} ({op.type}, output '{name}')"


def dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int = 0) -> np.ndarray:
    """``(q - zero_point) * scale``: one scale for the tensor, or one per slice along ``axis``."""
    values = q.astype(np.float64)
    scale = np.asarray(scale, dtype=np.float64).reshape(-1)
    zero = np.asarray(zero_point if zero_point is not None else 0, dtype=np.float64).reshape(-1)
    if scale.size <= 1:
        return (values - (zero[0] if zero.size else 0.0)) * (scale[0] if scale.size else 1.0)
    if values.ndim == 0 or values.shape[axis] != scale.size:
        raise MobilenetError(f"{scale.size} per-channel scales do not fit a tensor shaped {list(values.shape)}")
    shape = [1] * values.ndim
    shape[axis] = scale.size
    zero = np.broadcast_to(zero, scale.shape) if zero.size == 1 else zero
    return (values - zero.reshape(shape)) * scale.reshape(shape)


def read_tflite(path: str | os.PathLike[str]) -> TfliteGraph:
    """Parse a ``.tflite`` file with the official schema bindings; a damaged file raises MobilenetError."""
    file = Path(path)
    if not file.is_file():
        raise MobilenetError(f"TFLite file not found: {file}")
    raw = file.read_bytes()
    schema = _schema()
    if len(raw) < 8 or raw[4:8] != b"TFL3":
        raise MobilenetError(f"{file} is not a TFLite flatbuffer (no 'TFL3' identifier); is it truncated?")
    try:
        model = schema.ModelT.InitFromPackedBuf(raw, 0)
        return _graph_from_model(schema, model, raw, str(file.name))
    except MobilenetError:
        raise
    except Exception as exc:  # a damaged flatbuffer fails deep inside the generated code, in many ways
        raise MobilenetError(
            f"{file} is a corrupt or truncated TFLite file ({type(exc).__name__}: {exc}); download it again"
        ) from None


def _schema() -> Any:
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:
        raise MobilenetError(
            "reading .tflite files needs the ai-edge-litert package: pip install 'mobilenet[tflite]'"
        ) from None
    return schema_py_generated


def _enum_names(enum: type) -> dict[int, str]:
    return {value: name for name, value in vars(enum).items() if not name.startswith("_")}


def _graph_from_model(schema: Any, model: Any, raw: bytes, source: str) -> TfliteGraph:
    if not model.subgraphs:
        raise MobilenetError(f"{source}: the TFLite model has no subgraph")
    graph = model.subgraphs[0]
    type_names = _enum_names(schema.TensorType)
    tensors = [_read_tensor(i, t, model.buffers, raw, type_names, source) for i, t in enumerate(graph.tensors or [])]
    op_names = _enum_names(schema.BuiltinOperator)
    act_names = _enum_names(schema.ActivationFunctionType)
    ops = [_read_op(i, op, model.operatorCodes, op_names, act_names) for i, op in enumerate(graph.operators or [])]
    return TfliteGraph(source, tensors, ops, _ints(graph.inputs), _ints(graph.outputs))


def _ints(values: Iterable[Any] | None) -> tuple[int, ...]:
    return tuple(int(v) for v in values) if values is not None else ()


def _read_tensor(
    index: int, tensor: Any, buffers: list[Any], raw: bytes, type_names: dict[int, str], source: str
) -> TfliteTensor:
    name = tensor.name.decode("utf-8", "replace") if isinstance(tensor.name, bytes) else str(tensor.name or "")
    dtype = type_names.get(tensor.type, str(tensor.type))
    shape = _ints(tensor.shape)
    if tensor.sparsity is not None:
        raise MobilenetError(f"{source}: tensor {index} '{name}' is sparse; sparse weights are not supported")
    data = _buffer_data(buffers[tensor.buffer] if 0 < tensor.buffer < len(buffers) else None, raw)
    values = None
    if data is not None and len(data):
        if dtype not in _DTYPES:
            raise MobilenetError(f"{source}: constant tensor {index} '{name}' has unsupported type {dtype}")
        expected = int(np.prod(shape, dtype=np.int64)) * _DTYPES[dtype].itemsize
        if len(data) != expected:
            raise MobilenetError(
                f"{source}: tensor {index} '{name}' holds {len(data)} bytes, its shape {list(shape)} needs "
                f"{expected}; the file is corrupt"
            )
        values = np.frombuffer(bytes(data), dtype=_DTYPES[dtype]).reshape(shape)
    quant = tensor.quantization
    scale = np.asarray(quant.scale, dtype=np.float64) if quant is not None and quant.scale is not None else None
    zero = np.asarray(quant.zeroPoint, dtype=np.int64) if quant is not None and quant.zeroPoint is not None else None
    axis = int(quant.quantizedDimension) if quant is not None else 0
    return TfliteTensor(index, name, shape, dtype, values, scale, zero, axis)


def _buffer_data(buffer: Any, raw: bytes) -> bytes | np.ndarray | None:
    if buffer is None:
        return None
    if buffer.data is not None and len(buffer.data):
        return buffer.data
    if buffer.offset > 1:  # models over 2 GB keep tensor data after the flatbuffer
        end = buffer.offset + buffer.size
        if end > len(raw):
            raise MobilenetError("a tensor's data lies beyond the end of the file; the file is truncated")
        return raw[buffer.offset : end]
    return None


def _read_op(index: int, op: Any, codes: list[Any], op_names: dict[int, str], act_names: dict[int, str]) -> TfliteOp:
    code = codes[op.opcodeIndex]
    # Codes above 127 live in builtinCode; older files only fill the deprecated 8-bit field.
    builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    name = op_names.get(builtin, f"BUILTIN_{builtin}")
    if name == "CUSTOM":
        custom = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
        name = f"CUSTOM:{custom}"
    options: dict[str, Any] = {}
    if op.builtinOptions is not None:
        options = {key: value for key, value in vars(op.builtinOptions).items()}
        if "fusedActivationFunction" in options:
            options["fusedActivationFunction"] = act_names.get(options["fusedActivationFunction"], "UNKNOWN")
    return TfliteOp(index, name, _ints(op.inputs), _ints(op.outputs), options)


# ----------------------------------------------------------------------------------------------------------
# Element-wise functions: activations in any spelling, and the input rescaling
# ----------------------------------------------------------------------------------------------------------


def _relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 6.0)


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
    "relu6": _relu6,
    "hswish": lambda x: x * _relu6(x + 3.0) / 6.0,
    "hsigmoid": lambda x: _relu6(x + 3.0) / 6.0,
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "relu_n1_to_1": lambda x: np.clip(x, -1.0, 1.0),
}
_FUSED = {
    "NONE": ACTIVATIONS["linear"],
    "RELU": ACTIVATIONS["relu"],
    "RELU6": _relu6,
    "RELU_N1_TO_1": ACTIVATIONS["relu_n1_to_1"],
    "TANH": np.tanh,
}
_ELEMENTWISE: dict[str, Callable[..., np.ndarray]] = {
    "ADD": np.add,
    "SUB": np.subtract,
    "MUL": np.multiply,
    "DIV": np.divide,
    "MAXIMUM": np.maximum,
    "MINIMUM": np.minimum,
    "RELU": ACTIVATIONS["relu"],
    "RELU6": _relu6,
    "RELU_N1_TO_1": ACTIVATIONS["relu_n1_to_1"],
    "RELU_0_TO_1": lambda x: np.clip(x, 0.0, 1.0),
    "HARD_SWISH": ACTIVATIONS["hswish"],
    "LOGISTIC": ACTIVATIONS["sigmoid"],
    "QUANTIZE": lambda x: x,
    "DEQUANTIZE": lambda x: x,
}
# Samples shaped to broadcast against per-channel constants ([C] or [1, 1, 1, C]).
_SAMPLES = np.linspace(-10.0, 10.0, 201).reshape(-1, 1, 1, 1)


def _activation_name(module: nn.Module) -> str:
    kinds = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.Hardswish: "hswish", nn.Hardsigmoid: "hsigmoid"}
    kinds.update({nn.Sigmoid: "sigmoid", nn.Identity: "linear"})
    for kind, name in kinds.items():
        if type(module) is kind:
            return name
    raise MobilenetError(f"no TFLite equivalent known for activation {type(module).__name__}")


def _close(actual: np.ndarray, expected: np.ndarray) -> bool:
    # Quantized graphs store constants like 3 and 1/6 with rounding; 5% slack still tells ReLU from ReLU6.
    actual, expected = np.broadcast_arrays(actual, expected)
    return bool(np.all(np.abs(actual - expected) <= 0.05 + 0.02 * np.abs(expected)))


def _identify(values: np.ndarray) -> str:
    for name, function in ACTIVATIONS.items():
        if _close(values, function(_SAMPLES)):
            return name
    return "an unrecognised element-wise function"


# ----------------------------------------------------------------------------------------------------------
# Matching the graph against a model
# ----------------------------------------------------------------------------------------------------------


class _Mismatch(Exception):
    """The graph stops fitting a candidate model; ``progress`` says how far the candidate got."""

    def __init__(self, message: str, progress: int) -> None:
        super().__init__(message)
        self.progress = progress


@dataclass
class _Region:
    """A run of element-wise ops fed by one tensor and constants, and the tensor it ends in."""

    start: int
    ops: list[TfliteOp]
    end: int


class _Matcher:
    """Walks the graph's data flow along a model's layers, collecting the model's state dict as it goes."""

    def __init__(self, graph: TfliteGraph, model: MobileNet) -> None:
        self.graph = graph
        self.model = model
        self.used: set[int] = set()
        self.state: dict[str, torch.Tensor] = {}
        self.progress = 0
        self.current = -1
        self.softmax = False
        self.input_region: _Region | None = None

    # --- errors and bookkeeping ---

    def fail(self, where: TfliteOp | int, message: str) -> _Mismatch:
        if isinstance(where, TfliteOp):
            place = self.graph.describe(where)
        else:
            place = f"tensor {where} '{self.graph.tensor_name(where)}'"
        return _Mismatch(f"{place}: {message}", self.progress)

    def take(self, op: TfliteOp) -> TfliteOp:
        self.used.add(op.index)
        self.progress += 1
        return op

    def canonical(self, tensor: int) -> int:
        """The tensor before any QUANTIZE/DEQUANTIZE: requantized copies of one activation are one value."""
        producer = self.graph.producers.get(tensor)
        while producer is not None and producer.type in _IDENTITY_OPS and not self.graph.is_constant(tensor):
            tensor = producer.inputs[0]
            producer = self.graph.producers.get(tensor)
        return tensor

    def next_op(self, tensor: int, types: set[str], what: str, passthrough: frozenset[str] = _IDENTITY_OPS) -> TfliteOp:
        """The unused op of one of ``types`` that reads ``tensor`` (through identity ops)."""
        found: list[TfliteOp] = []
        pending = [tensor]
        while pending:
            for op in self.graph.consumers.get(pending.pop(), []):
                if op.index in self.used:
                    continue
                if op.type in passthrough and op.type not in types:
                    self.used.add(op.index)
                    pending.extend(op.outputs)
                else:
                    found.append(op)
        found.sort(key=lambda op: op.index)
        for op in found:
            if op.type in types:
                return op
        if found:
            raise self.fail(found[0], f"expected {what}")
        raise self.fail(tensor, f"nothing reads this tensor; expected {what}")

    # --- element-wise runs ---

    def region(self, start: int) -> _Region:
        """Element-wise ops computing a function of ``start`` alone (plus constants), in execution order."""
        inside = {start}
        ops: list[TfliteOp] = []
        first = self.graph.producers[start].index + 1 if start in self.graph.producers else 0
        for op in self.graph.ops[first:]:
            if op.index in self.used or op.type not in _ELEMENTWISE:
                continue
            ins = [t for t in op.inputs if t >= 0]
            if any(t in inside for t in ins) and all(t in inside or self.graph.is_constant(t) for t in ins):
                ops.append(op)
                inside.update(op.outputs)
        end = ops[-1].outputs[0] if ops else start
        for op in ops[:-1]:  # a value leaving the run halfway means it is not one function of ``start``
            for reader in self.graph.consumers.get(op.outputs[0], []):
                if reader not in ops:
                    raise self.fail(reader, "reads an intermediate value of an element-wise activation")
        return _Region(start, ops, end)

    def evaluate(self, region: _Region, x: np.ndarray, fused: str = "NONE") -> np.ndarray:
        values = {region.start: _FUSED[fused](x)}
        for op in region.ops:
            args = [values[t] if t in values else self.graph.constant(t) for t in op.inputs if t >= 0]
            result = _ELEMENTWISE[op.type](*args)
            values[op.outputs[0]] = _FUSED.get(op.fused_activation, _FUSED["NONE"])(result)
        return values[region.end]

    def activation(self, op: TfliteOp, expected: str, where: str) -> int:
        """Check the function applied after ``op`` (fused plus following element-wise ops); return its output."""
        if op.fused_activation not in _FUSED:
            raise self.fail(op, f"unsupported fused activation {op.fused_activation}")
        run = self.region(op.outputs[0])
        actual = self.evaluate(run, _SAMPLES, op.fused_activation)
        if not _close(actual, ACTIVATIONS[expected](_SAMPLES)):
            raise self.fail(
                run.ops[-1] if run.ops else op,
                f"the activation after it is {_identify(actual)}, but {where} of our model uses {expected}",
            )
        for element in run.ops:
            self.take(element)
        return run.end

    # --- weights ---

    def weight(self, op: TfliteOp, position: int, shape: tuple[int, ...], what: str) -> np.ndarray:
        index = op.inputs[position] if position < len(op.inputs) else -1
        if index < 0:
            if position == 2:  # the bias is optional
                return np.zeros(shape, dtype=np.float32)
            raise self.fail(op, f"has no {what}")
        if not self.graph.is_constant(index):
            raise self.fail(op, f"its {what} '{self.graph.tensor_name(index)}' is computed, not a constant")
        values = self.graph.constant(index)
        if values.shape != shape:
            name = self.graph.tensor_name(index)
            raise self.fail(op, f"its {what} '{name}' is shaped {list(values.shape)}, expected {list(shape)}")
        producer = self.graph.producers.get(index)
        if producer is not None:
            self.used.add(producer.index)  # the DEQUANTIZE of float16 weights
        return values

    def put(self, name: str, values: np.ndarray | float, like: torch.Tensor) -> None:
        tensor = torch.as_tensor(np.asarray(values, dtype=np.float32)).reshape(like.shape).clone()
        self.state[name] = tensor

    # --- the model's parts ---

    def match(self) -> None:
        self.start()
        for name, layer in self.model.features.named_children():
            self.layer(f"features.{name}", layer)
        self.head()
        self.finish()

    def start(self) -> None:
        if len(self.graph.inputs) != 1:
            raise _Mismatch(f"the graph has {len(self.graph.inputs)} inputs; a MobileNet has one image input", 0)
        image = self.graph.inputs[0]
        shape = self.graph.tensors[image].shape
        size = self.model.config.resolution
        if shape != (1, size, size, self.model.config.in_chans):
            raise self.fail(image, f"input shaped {list(shape)}, expected [1, {size}, {size}, 3] (NHWC)")
        self.input_region = self.region(image)
        for op in self.input_region.ops:
            self.take(op)
        self.current = self.input_region.end

    def layer(self, prefix: str, layer: nn.Module) -> None:
        if isinstance(layer, ConvBnAct):
            self.conv(prefix, layer)
        elif isinstance(layer, DepthwiseSeparable):
            self.conv(f"{prefix}.depthwise", layer.depthwise)
            self.conv(f"{prefix}.pointwise", layer.pointwise)
        elif isinstance(layer, InvertedResidual):
            self.bottleneck(prefix, layer)
        else:
            raise MobilenetError(f"TFLite import does not know how to fill {type(layer).__name__} ({prefix})")

    def bottleneck(self, prefix: str, block: InvertedResidual) -> None:
        block_input = self.current
        if isinstance(block.expand, ConvBnAct):
            self.conv(f"{prefix}.expand", block.expand)
        self.conv(f"{prefix}.depthwise", block.depthwise)
        if isinstance(block.se, SqueezeExcite):
            self.squeeze_excite(f"{prefix}.se", block.se)
        self.conv(f"{prefix}.project", block.project)
        if block.use_residual:
            self.residual(prefix, block_input)

    def conv(self, prefix: str, unit: ConvBnAct) -> None:
        conv = unit.conv
        depthwise = conv.groups > 1
        kind = "DEPTHWISE_CONV_2D" if depthwise else "CONV_2D"
        k, stride = conv.kernel_size[0], conv.stride[0]
        what = f"a {k}x{k} {'depthwise ' if depthwise else ''}conv, stride {stride}, for {prefix}"
        op = self.next_op(self.current, {kind, "PAD", "PADV2"}, what)
        pads = None
        if op.type in ("PAD", "PADV2"):
            pads = self.pad_amounts(self.take(op))
            op = self.next_op(op.outputs[0], {kind}, what)
        self.check_conv_geometry(op, k, stride, pads, what)
        if depthwise:
            weights = self.weight(op, 1, (1, k, k, conv.out_channels), "depthwise weights")
            weights = weights[0].transpose(2, 0, 1)[:, None]  # 1HWC -> C1HW
        else:
            weights = self.weight(op, 1, (conv.out_channels, k, k, conv.in_channels), "weights")
            weights = weights.transpose(0, 3, 1, 2)  # OHWI -> OIHW
        bias = self.weight(op, 2, (conv.out_channels,), "bias")
        self.take(op)
        self.put(f"{prefix}.conv.weight", weights, conv.weight)
        self.fill_identity_bn(prefix, unit.bn, bias)
        self.current = self.activation(op, _activation_name(unit.act), prefix)

    def pad_amounts(self, op: TfliteOp) -> tuple[int, int, int, int]:
        pads = self.graph.constant(op.inputs[1]).astype(np.int64) if self.graph.is_constant(op.inputs[1]) else None
        if pads is None or pads.shape != (4, 2) or pads[0].any() or pads[3].any():
            raise self.fail(op, "pads something other than height and width")
        if len(op.inputs) > 2 and op.inputs[2] >= 0 and np.any(self.graph.constant(op.inputs[2]) != 0):
            raise self.fail(op, "pads with a non-zero value")
        return int(pads[1, 0]), int(pads[1, 1]), int(pads[2, 0]), int(pads[2, 1])

    def check_conv_geometry(
        self, op: TfliteOp, k: int, stride: int, pads: tuple[int, int, int, int] | None, what: str
    ) -> None:
        o = op.options
        if (o.get("strideH"), o.get("strideW")) != (stride, stride):
            raise self.fail(op, f"stride {o.get('strideH')}x{o.get('strideW')}, expected {what}")
        if (o.get("dilationHFactor", 1), o.get("dilationWFactor", 1)) != (1, 1):
            raise self.fail(op, f"dilated conv, expected {what}")
        if op.type == "DEPTHWISE_CONV_2D" and o.get("depthMultiplier", 1) not in (0, 1):
            raise self.fail(op, f"depth multiplier {o.get('depthMultiplier')}, expected 1")
        if pads is not None:
            if o.get("padding") != _VALID or pads != self.same_pads(op.inputs[0], k, stride):
                raise self.fail(op, f"explicit padding {pads} differs from TF SAME, expected {what}")
        elif o.get("padding") != _SAME and k > 1:
            raise self.fail(op, f"VALID padding, expected SAME padding for {what}")

    def same_pads(self, tensor: int, k: int, stride: int) -> tuple[int, int, int, int]:
        """TF SAME's (top, bottom, left, right) for the image that entered the PAD op."""
        producer = self.graph.producers.get(tensor)
        source = producer.inputs[0] if producer is not None and producer.type in ("PAD", "PADV2") else tensor
        _, h, w, _ = self.graph.tensors[source].shape
        sides = []
        for size in (h, w):
            total = max((-(-size // stride) - 1) * stride + k - size, 0)
            sides += [total // 2, total - total // 2]
        return sides[0], sides[1], sides[2], sides[3]

    def fill_identity_bn(self, prefix: str, bn: nn.BatchNorm2d, bias: np.ndarray) -> None:
        # TFLite folded BN into the conv: an identity BN (var + eps == 1) whose shift is the folded bias.
        self.put(f"{prefix}.bn.weight", np.ones(bn.num_features), bn.weight)
        self.put(f"{prefix}.bn.bias", bias, bn.bias)
        self.put(f"{prefix}.bn.running_mean", np.zeros(bn.num_features), bn.running_mean)  # type: ignore[arg-type]
        self.put(f"{prefix}.bn.running_var", np.full(bn.num_features, 1.0 - bn.eps), bn.running_var)  # type: ignore[arg-type]

    def residual(self, prefix: str, block_input: int) -> None:
        op = self.next_op(self.current, {"ADD"}, f"the residual ADD of {prefix}")
        others = [t for t in op.inputs if self.canonical(t) != self.canonical(self.current)]
        if len(others) != 1 or self.canonical(others[0]) != self.canonical(block_input):
            raise self.fail(op, f"does not add the input of {prefix} back (expected a residual connection)")
        if op.fused_activation != "NONE":
            raise self.fail(op, f"residual ADD has fused {op.fused_activation}; {prefix} has none")
        self.current = self.take(op).outputs[0]

    def global_pool(self, tensor: int, what: str) -> TfliteOp:
        op = self.next_op(tensor, {"AVERAGE_POOL_2D", "MEAN"}, what)
        _, h, w, _ = self.graph.tensors[op.inputs[0]].shape
        if op.type == "MEAN":
            axes = self.graph.constant(op.inputs[1]) if self.graph.is_constant(op.inputs[1]) else None
            if axes is None or sorted(int(a) % 4 for a in axes.reshape(-1)) != [1, 2]:
                raise self.fail(op, f"MEAN is not over height and width; expected {what}")
        elif op.options.get("filterHeight", 0) < h or op.options.get("filterWidth", 0) < w:
            raise self.fail(
                op,
                f"pools {op.options.get('filterHeight')}x{op.options.get('filterWidth')} of a "
                f"{h}x{w} map; expected {what}",
            )
        return self.take(op)

    def squeeze_excite(self, prefix: str, se: SqueezeExcite) -> None:
        x = self.current
        pooled = self.global_pool(x, f"the squeeze-excite pooling of {prefix}").outputs[0]
        self.current = pooled
        self.linear(f"{prefix}.reduce", se.reduce, _activation_name(se.act), _IDENTITY_OPS)
        self.linear(f"{prefix}.expand", se.expand, _activation_name(se.gate), _IDENTITY_OPS)
        op = self.next_op(self.current, {"MUL"}, f"the squeeze-excite MUL of {prefix}")
        if {self.canonical(t) for t in op.inputs} != {self.canonical(x), self.canonical(self.current)}:
            raise self.fail(op, f"does not scale the input of {prefix} by its gate")
        self.current = self.take(op).outputs[0]

    def linear(self, prefix: str, module: nn.Module, act: str, passthrough: frozenset[str]) -> None:
        """A 1x1 CONV_2D or a FULLY_CONNECTED with bias: our Linear layers and the SE's 1x1 convs."""
        weight = module.weight
        out_features, in_features = weight.shape[0], weight.shape[1]
        what = f"a 1x1 conv or fully-connected layer {in_features}->{out_features} for {prefix}"
        op = self.next_op(self.current, {"CONV_2D", "FULLY_CONNECTED"}, what, passthrough)
        shape = (out_features, 1, 1, in_features) if op.type == "CONV_2D" else (out_features, in_features)
        values = self.weight(op, 1, shape, "weights")
        bias = self.weight(op, 2, (out_features,), "bias")
        self.take(op)
        self.put(f"{prefix}.weight", values.reshape(weight.shape), weight)
        self.put(f"{prefix}.bias", bias, module.bias)
        self.current = self.activation(op, act, prefix)

    def head(self) -> None:
        model = self.model
        self.current = self.global_pool(self.current, "the global average pooling of the head").outputs[0]
        if isinstance(model.pre_logits, nn.Sequential):
            linear, act = model.pre_logits[0], model.pre_logits[1]
            self.linear("pre_logits.0", linear, _activation_name(act), _HEAD_IDENTITY_OPS)
        if not isinstance(model.classifier, nn.Linear):
            raise MobilenetError("TFLite import needs a model with a classifier")
        self.linear("classifier", model.classifier, "linear", _HEAD_IDENTITY_OPS)

    def finish(self) -> None:
        tensor = self.current
        while tensor not in self.graph.outputs:
            readers = [op for op in self.graph.consumers.get(tensor, []) if op.index not in self.used]
            if len(readers) != 1 or readers[0].type not in _TAIL_OPS:
                where = readers[0] if readers else tensor
                raise self.fail(where, "expected the logits to reach the graph output (through RESHAPE/SOFTMAX)")
            self.softmax |= readers[0].type == "SOFTMAX"
            tensor = self.take(readers[0]).outputs[0]
        leftover = [op for op in self.graph.ops if op.index not in self.used]
        if leftover:
            raise self.fail(leftover[0], "is not part of a MobileNet (left over after matching every layer)")


# ----------------------------------------------------------------------------------------------------------
# Recognising the variant
# ----------------------------------------------------------------------------------------------------------


def _depthwise_count(spec: ArchSpec) -> int:
    kinds = (LayerKind.DEPTHWISE_SEPARABLE, LayerKind.BOTTLENECK)
    return sum(row.repeats for row in spec.layers if row.kind in kinds)


def _output_channels(graph: TfliteGraph, op: TfliteOp) -> int | None:
    if op.type not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") or len(op.inputs) < 2:
        return None
    shape = graph.tensors[op.inputs[1]].shape
    return shape[-1] if op.type == "DEPTHWISE_CONV_2D" else shape[0]


def _num_classes(graph: TfliteGraph) -> int | None:
    """Width of the op that feeds the graph output through RESHAPE/SOFTMAX/QUANTIZE, if it is a classifier."""
    tensor = graph.outputs[0] if graph.outputs else -1
    producer = graph.producers.get(tensor)
    while producer is not None and producer.type in _TAIL_OPS:
        producer = graph.producers.get(producer.inputs[0])
    if producer is None or producer.type not in ("CONV_2D", "FULLY_CONNECTED"):
        return None
    return _output_channels(graph, producer)


def _width_candidates(graph: TfliteGraph, spec: ArchSpec) -> list[Candidate]:
    """Widths implied by the first conv and by the last convs (the widest narrowing layer sits before the head)."""
    convs = [op for op in graph.ops if op.type == "CONV_2D"]
    stem = _output_channels(graph, convs[0]) if convs else None
    last = [c for c in (_output_channels(graph, op) for op in convs[-4:]) if c]
    return width_candidates(spec, stem, last)


def _candidate_archs(graph: TfliteGraph) -> tuple[list[str], bool]:
    """Architectures with as many depthwise convs as the graph; else all, closest first (for the error)."""
    count = sum(op.type == "DEPTHWISE_CONV_2D" for op in graph.ops)
    exact = [arch for arch, spec in ARCHITECTURES.items() if _depthwise_count(spec) == count]
    if exact:
        return exact, True
    ranked = sorted(ARCHITECTURES, key=lambda arch: abs(_depthwise_count(ARCHITECTURES[arch]) - count))
    return ranked[:2], False


def _resolution(graph: TfliteGraph) -> int:
    if len(graph.inputs) != 1:
        raise MobilenetError(f"{graph.source}: the graph has {len(graph.inputs)} inputs; a MobileNet has one image")
    tensor = graph.tensors[graph.inputs[0]]
    if len(tensor.shape) != 4 or tensor.shape[0] != 1 or tensor.shape[1] != tensor.shape[2] or tensor.shape[3] != 3:
        raise MobilenetError(
            f"{graph.source}: input tensor {tensor.index} '{tensor.name}' is shaped {list(tensor.shape)}; "
            "a MobileNet takes one square RGB image [1, R, R, 3]"
        )
    return tensor.shape[1]


@dataclass
class _Recognised:
    name: str
    num_classes: int
    matcher: _Matcher
    options: dict[str, Any]  # model options beyond the name (a fixed stem width)


def recognise(graph: TfliteGraph) -> _Recognised:
    """Find the model name whose every layer fits the graph, or explain where the closest one stops fitting."""
    resolution = _resolution(graph)
    found_classes = _num_classes(graph)
    classes = found_classes or 1001
    archs, exact = _candidate_archs(graph)
    found = search_fitting_model(
        archs, lambda spec: _width_candidates(graph, spec), resolution, classes,
        lambda model: _Matcher(graph, model), _Mismatch,
    )
    if found.matcher is not None:
        return _Recognised(found.name, classes, found.matcher, found.options)
    best = found.closest
    count = sum(op.type == "DEPTHWISE_CONV_2D" for op in graph.ops)
    hint = "" if exact else f" (the graph has {count} depthwise convs, no MobileNet we know has that many)"
    if best is None:
        raise MobilenetError(f"{graph.source}: cannot map the graph onto any MobileNet{hint}")
    if found_classes is None:
        hint += "; its output does not come from a classifier"
    raise MobilenetError(
        f"{graph.source}: cannot map the graph onto a MobileNet{hint}; closest is {best[1]}, which stops fitting "
        f"at {best[2]}"
    )


# ----------------------------------------------------------------------------------------------------------
# Preprocessing that travels with the weights
# ----------------------------------------------------------------------------------------------------------


def _preprocessing(graph: TfliteGraph, matcher: _Matcher, num_classes: int) -> tuple[Preprocessing, str]:
    """Which ``(x/255 - mean) / std`` the graph's input stands for, from its quantization or its rescaling."""
    image = graph.tensors[graph.inputs[0]]
    pixels = np.linspace(0.0, 1.0, 256).reshape(-1, 1, 1, 1)
    if image.quantized and image.dtype in ("UINT8", "INT8"):
        raw = pixels * 255.0 - (128.0 if image.dtype == "INT8" else 0.0)  # int8 inputs are pixels - 128
        values, how = image.real_value(raw), f"its {image.dtype.lower()} input quantization"
    elif matcher.input_region is not None and matcher.input_region.ops:
        values, how = pixels * 255.0, "the rescaling ops at its input (fed pixels in [0, 255])"
    else:
        values, how = pixels * 2.0 - 1.0, "the TF-slim convention (float input in [-1, 1])"
    region = matcher.input_region
    real = matcher.evaluate(region, values) if region is not None else values
    real = np.broadcast_to(real, real.shape[:-1] + (3,)).reshape(256, 3)
    mean, std = [], []
    for channel in range(3):
        slope, intercept = np.polyfit(pixels.reshape(-1), real[:, channel], 1)
        fitted = slope * pixels.reshape(-1) + intercept
        if slope <= 0 or np.max(np.abs(fitted - real[:, channel])) > 1e-3 * max(1.0, float(np.max(np.abs(real)))):
            raise MobilenetError(f"{graph.source}: the ops at the graph input are not a rescaling of pixel values")
        mean.append(-intercept / slope)
        std.append(1.0 / slope)
    # TF-slim trained on exactly [-1, 1]; a uint8 input's (q - 128) / 128 is that up to half a pixel step.
    if np.allclose(mean, INCEPTION_MEAN, atol=0.01) and np.allclose(std, INCEPTION_STD, atol=0.01):
        mean, std = list(INCEPTION_MEAN), list(INCEPTION_STD)
    prep = Preprocessing(
        resolution=_resolution(graph),
        mean=tuple(float(round(m, 6)) for m in mean),
        std=tuple(float(round(s, 6)) for s in std),
        crop_pct=0.875,
        interpolation="bilinear",
        labels_offset=1 if num_classes == 1001 else 0,
    )
    return prep, how


# ----------------------------------------------------------------------------------------------------------
# The public entry point
# ----------------------------------------------------------------------------------------------------------


def _quantization_kind(graph: TfliteGraph) -> str:
    """How the conv weights are stored: 'uint8 per-tensor', 'int8 per-channel', 'float16' or 'float32'."""
    stored = []
    for op in graph.ops:
        if op.type in ("CONV_2D", "DEPTHWISE_CONV_2D") and len(op.inputs) > 1 and op.inputs[1] >= 0:
            index = op.inputs[1]
            producer = graph.producers.get(index)
            if producer is not None and producer.type == "DEQUANTIZE":  # float16 (or int8) weights unpacked at load
                index = producer.inputs[0]
            stored.append(graph.tensors[index])
    integer = [w for w in stored if w.dtype in ("UINT8", "INT8") and w.quantized]
    if integer:
        per_channel = any(w.scale is not None and w.scale.size > 1 for w in integer)
        return f"{integer[0].dtype.lower()} {'per-channel' if per_channel else 'per-tensor'}"
    return "float16" if any(w.dtype == "FLOAT16" for w in stored) else "float32"


def labels_for_outputs(path: str | os.PathLike[str], num_classes: int, labels_offset: int) -> list[str]:
    file = Path(path)
    names = read_label_file(file)
    if len(names) == num_classes - 1 and labels_offset == 1:
        names = ["background", *names]  # a 1000-line ImageNet list for a 1001-way TF-slim head
    if len(names) != num_classes:
        raise MobilenetError(f"{file} has {len(names)} labels but the model has {num_classes} outputs")
    return names


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def import_tflite(path: str | os.PathLike[str], labels: str | os.PathLike[str] | None = None) -> MobileNet:
    """Read a TFLite MobileNet (float or quantized) into our float model, in eval mode.

    The variant is recognised from the graph; the model carries the preprocessing the graph expects,
    ``class_names`` from ``labels`` (one per line; TF-slim's 1001 include "background") and ``weights_info``
    naming the file and its sha256.
    """
    file = Path(path)
    graph = read_tflite(file)
    found = recognise(graph)
    prep, how = _preprocessing(graph, found.matcher, found.num_classes)
    model = create_model(
        found.name, padding="tf_same", num_classes=found.num_classes, preprocessing=prep, **found.options
    )
    _load_state(model, found.matcher.state, graph.source)
    model.class_names = labels_for_outputs(labels, found.num_classes, prep.labels_offset) if labels else None
    model.weights_info = {
        "source": f"{file.name} (sha256 {_sha256(file)})",
        "license": LICENSE_NOTE,
        "extra": {
            "format": "tflite",
            "model": found.name,
            "released_variant": found.name in RELEASED_MODELS,
            "quantization": _quantization_kind(graph),
            "graph_output": "probabilities (softmax)" if found.matcher.softmax else "logits",
            "preprocessing_from": how,
        },
    }
    return model.eval()


def _load_state(model: MobileNet, state: dict[str, torch.Tensor], source: str) -> None:
    """Every parameter and BN statistic must come from the graph: a gap means the matcher missed a layer."""
    expected = {name for name in model.state_dict() if not name.endswith("num_batches_tracked")}
    missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or extra:
        raise MobilenetError(f"{source}: import left {missing[:3]} unfilled and produced unknown {extra[:3]}")
    full = model.state_dict()
    full.update(state)
    model.load_state_dict(full, strict=True)
