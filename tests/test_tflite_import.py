"""TFLite import: our float model against the official interpreter running Google's quantized originals.

The reference is the TFLite interpreter (ai-edge-litert, default settings) on the uint8 image; our model gets
the same pixels as the real values the graph's input quantization gives them, ``(q - zero_point) * scale``.
Planted bugs (symmetric padding, ReLU for ReLU6, BGR, [0, 1] inputs) must each miss a target, which shows the
targets are tight enough to catch them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import mobilenet
from mobilenet.cli.main import main as cli_main
from mobilenet.data.decode import load_rgb
from mobilenet.errors import MobilenetError
from mobilenet.models.layers import ConvBnAct, InvertedResidual, SqueezeExcite

pytest.importorskip("ai_edge_litert", reason="TFLite import needs ai-edge-litert (pip install mobilenet[tflite])")
from ai_edge_litert import schema_py_generated as schema  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from mobilenet.weights.tflite_import import dequantize, import_tflite, read_tflite  # noqa: E402

CORAL = Path(__file__).resolve().parents[1].parent / "shared" / "testdata" / "coral"
PHOTOS = ("cat.bmp", "grace_hopper.bmp", "parrot.jpg", "sunflower.bmp")
MODELS = {
    "v1": ("mobilenet_v1_0.25_128_quant.tflite", "mobilenet_v1_0.25_128", 100),
    "v2_quant": ("mobilenet_v2_1.0_224_quant.tflite", "mobilenet_v2_1.0_224", 100),
    "v2_tf2_ptq": ("tf2_mobilenet_v2_1.0_224_ptq.tflite", "mobilenet_v2_1.0_224", 100),
}
BUG_SUBSET = 24  # images per planted-bug check on a 224px model: enough to fail, cheap on 2 cores


def _require(name: str) -> Path:
    path = CORAL / name
    if not path.is_file():
        pytest.skip(f"test data {path} is missing (the shared Coral MobileNet files sit beside the repository)")
    return path


# ----------------------------------------------------------------------------------------------------------
# Agreement metrics
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Agreement:
    cases: int
    confident: int  # cases where the interpreter's top-1 leads its runner-up by >= 0.2
    confident_agree: int
    top1: float
    top5_min: int  # smallest overlap of our top-5 with the interpreter's (its ties share a rank)
    corr_median: float

    def failures(self) -> list[str]:
        failed = []
        if self.confident_agree < self.confident:
            failed.append(f"top-1 differs on {self.confident - self.confident_agree} confident cases")
        if self.top1 < 0.9:
            failed.append(f"top-1 agreement {self.top1:.1%} < 90%")
        if self.top5_min < 4:
            failed.append(f"a top-5 overlap of only {self.top5_min}")
        if self.corr_median < 0.99:
            failed.append(f"median correlation {self.corr_median:.4f} < 0.99")
        return failed


def agreement(reference: np.ndarray, ours: np.ndarray) -> Agreement:
    ranked = np.sort(reference, axis=1)
    confident = ranked[:, -1] - ranked[:, -2] >= 0.2
    same_top1 = reference.argmax(1) == ours.argmax(1)
    # uint8 probabilities tie often: every class at least as likely as the 5th counts as top-5.
    fifth = ranked[:, -5]
    our_top5 = np.argsort(-ours, axis=1)[:, :5]
    overlap = [int(np.sum(reference[i, our_top5[i]] >= fifth[i])) for i in range(len(reference))]
    corr = [np.corrcoef(reference[i], ours[i])[0, 1] for i in range(len(reference))]
    return Agreement(
        cases=len(reference),
        confident=int(confident.sum()),
        confident_agree=int(same_top1[confident].sum()),
        top1=float(same_top1.mean()),
        top5_min=min(overlap),
        corr_median=float(np.median(corr)),
    )


# ----------------------------------------------------------------------------------------------------------
# Images, the interpreter and our model
# ----------------------------------------------------------------------------------------------------------


def evaluation_images(size: int, crops: int, seed: int = 0) -> np.ndarray:
    """The four photos resized whole, then seeded random boxes of them, all bilinear to ``size``: NHWC uint8."""
    photos = [load_rgb(_require(name)) for name in PHOTOS]
    images = [np.asarray(photo.resize((size, size), Image.BILINEAR)) for photo in photos]
    rng = np.random.default_rng(seed)
    for i in range(crops):
        photo = photos[i % len(photos)]
        width, height = photo.size
        w, h = int(rng.uniform(0.3, 1.0) * width), int(rng.uniform(0.3, 1.0) * height)
        x0, y0 = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        images.append(np.asarray(photo.resize((size, size), Image.BILINEAR, box=(x0, y0, x0 + w, y0 + h))))
    return np.stack(images)


def interpreter_probabilities(path: Path, images: np.ndarray) -> tuple[np.ndarray, tuple[float, int]]:
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero = target["quantization"]
    results = []
    for image in images:
        interpreter.set_tensor(source["index"], image[None])
        interpreter.invoke()
        q = interpreter.get_tensor(target["index"])[0].astype(np.float64)
        results.append((q - zero) * scale if scale else q)
    return np.stack(results), source["quantization"]


def our_probabilities(
    model: nn.Module, images: np.ndarray, quantization: tuple[float, int], bgr: bool = False, unit: bool = False
) -> np.ndarray:
    scale, zero = quantization
    x = images.astype(np.float32) / 255.0 if unit else (images.astype(np.float32) - zero) * scale
    if bgr:
        x = x[..., ::-1]
    batch = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)  # an NCHW view of NHWC memory
    with torch.inference_mode():
        logits = torch.cat([model(chunk) for chunk in batch.split(32)])
    return torch.softmax(logits.double(), dim=1).numpy()


@dataclass
class Case:
    path: Path
    model: mobilenet.MobileNet
    images: np.ndarray
    reference: np.ndarray
    quantization: tuple[float, int]
    ours: np.ndarray


@pytest.fixture(scope="module")
def cases() -> dict[str, Case]:
    return {}


def get_case(cases: dict[str, Case], key: str) -> Case:
    """Import, run the interpreter and our model once per module (the expensive part of this file)."""
    if key not in cases:
        cases[key] = _make_case(key)
    return cases[key]


def _make_case(key: str) -> Case:
    filename, _, crops = MODELS[key]
    path = _require(filename)
    model = import_tflite(path, labels=_require("imagenet_labels.txt"))
    model = model.to(memory_format=torch.channels_last)  # ~1.5x faster depthwise convs on CPU
    images = evaluation_images(model.config.resolution, crops)
    reference, quantization = interpreter_probabilities(path, images)
    return Case(path, model, images, reference, quantization, our_probabilities(model, images, quantization))


# ----------------------------------------------------------------------------------------------------------
# Agreement with the interpreter
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", list(MODELS))
def test_float_import_agrees_with_quantized_interpreter(cases: dict[str, Case], key: str) -> None:
    case = get_case(cases, key)
    result = agreement(case.reference, case.ours)
    assert result.cases == 4 + MODELS[key][2]
    assert result.confident >= result.cases // 3, "too few confident cases to test the strictest target"
    assert not result.failures(), f"{key}: {result.failures()} ({result})"


@pytest.mark.parametrize("key", list(MODELS))
def test_variant_preprocessing_and_provenance_come_from_the_graph(cases: dict[str, Case], key: str) -> None:
    case = get_case(cases, key)
    model, (_, name, _) = case.model, MODELS[key]
    config = model.config
    assert model.weights_info["extra"]["model"] == name
    assert mobilenet.models.model_name(config.arch, config.width_multiplier, config.resolution) == name
    assert (config.num_classes, config.padding, model.training) == (1001, "tf_same", False)
    prep = model.preprocessing
    assert (prep.mean, prep.std, prep.labels_offset, prep.resolution) == ((0.5,) * 3, (0.5,) * 3, 1, config.resolution)
    assert model.class_names is not None and len(model.class_names) == 1001 and model.class_names[0] == "background"
    assert case.path.name in model.weights_info["source"] and "sha256" in model.weights_info["source"]
    assert "Apache" in model.weights_info["license"]
    expected_kind = "int8 per-channel" if key == "v2_tf2_ptq" else "uint8 per-tensor"
    assert model.weights_info["extra"]["quantization"] == expected_kind


def test_folded_batchnorm_is_identity_plus_folded_bias(cases: dict[str, Case]) -> None:
    bn = get_case(cases, "v2_quant").model.features[0].bn
    x = torch.randn(2, bn.num_features, 3, 3)
    torch.testing.assert_close(bn(x), x + bn.bias.view(1, -1, 1, 1), rtol=1e-6, atol=1e-6)


def test_cat_is_an_egyptian_cat_for_v2(cases: dict[str, Case]) -> None:
    case = get_case(cases, "v2_quant")
    assert case.model.class_names is not None
    assert case.model.class_names[int(case.ours[0].argmax())] == "Egyptian cat"
    assert int(case.reference[0].argmax()) == int(case.ours[0].argmax())


# ----------------------------------------------------------------------------------------------------------
# Planted bugs must miss a target
# ----------------------------------------------------------------------------------------------------------


def _symmetric_padding(model: nn.Module) -> nn.Module:
    model = copy.deepcopy(model)
    for unit in model.modules():
        if isinstance(unit, ConvBnAct) and not isinstance(unit.pad, nn.Identity):
            k = unit.conv.kernel_size[0]
            unit.pad, unit.conv.padding = nn.Identity(), (k // 2, k // 2)
    return model


def _relu_for_relu6(model: nn.Module) -> nn.Module:
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU6):
                setattr(parent, name, nn.ReLU())
    return model


BUGS: dict[str, tuple[Callable[[nn.Module], nn.Module], dict[str, bool]]] = {
    "symmetric_padding": (_symmetric_padding, {}),
    "relu_instead_of_relu6": (_relu_for_relu6, {}),
    "bgr_input": (lambda m: m, {"bgr": True}),
    "inputs_in_0_1": (lambda m: m, {"unit": True}),
}


@pytest.mark.parametrize("bug", list(BUGS))
@pytest.mark.parametrize("key", ["v1", "v2_tf2_ptq"])
def test_planted_bug_misses_a_target(cases: dict[str, Case], key: str, bug: str) -> None:
    case = get_case(cases, key)
    count = len(case.images) if key == "v1" else BUG_SUBSET
    assert not agreement(case.reference[:count], case.ours[:count]).failures(), "the correct model must pass"
    plant, options = BUGS[bug]
    buggy = our_probabilities(plant(case.model), case.images[:count], case.quantization, **options)
    assert agreement(case.reference[:count], buggy).failures(), f"{bug} went unnoticed on {key}"


# ----------------------------------------------------------------------------------------------------------
# CLI and errors
# ----------------------------------------------------------------------------------------------------------


def test_cli_import_writes_weights_that_reload_identically(cases: dict[str, Case], tmp_path: Path) -> None:
    case = get_case(cases, "v2_quant")
    out = tmp_path / "v2.safetensors"
    labels = _require("imagenet_labels.txt")
    assert cli_main(["import", str(case.path), "-o", str(out), "--labels", str(labels)]) == 0
    loaded = mobilenet.load(out)
    assert loaded.config == case.model.config and loaded.class_names == case.model.class_names
    assert loaded.weights_info["source"] == case.model.weights_info["source"]
    expected = case.model.state_dict()
    assert all(torch.equal(value, expected[name]) for name, value in loaded.state_dict().items())
    loaded = loaded.to(memory_format=torch.channels_last)  # the layout of the cached model: same kernels
    x = torch.randn(1, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), case.model(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("filename", "problem"), [("model.xyz", "unknown format '.xyz'"), ("model.h5", "not an HDF5 file")]
)
def test_cli_rejects_unknown_formats(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], filename: str, problem: str
) -> None:
    source = tmp_path / filename
    source.write_bytes(b"not a model")
    assert cli_main(["import", str(source), "-o", str(tmp_path / "out.safetensors")]) == 2
    message = capsys.readouterr().err
    assert filename in message and problem in message and ".tflite" in message and "supported formats" in message
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("keep", [0.02, 0.5])
def test_truncated_file_is_a_clear_error(tmp_path: Path, keep: float) -> None:
    raw = _require(MODELS["v1"][0]).read_bytes()
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(MobilenetError, match="corrupt or truncated"):
        import_tflite(broken)


def test_not_a_flatbuffer_is_a_clear_error(tmp_path: Path) -> None:
    fake = tmp_path / "fake.tflite"
    fake.write_bytes(b"\x00" * 64)
    with pytest.raises(MobilenetError, match="not a TFLite flatbuffer"):
        import_tflite(fake)


def test_deeplab_graph_names_the_first_op_that_does_not_fit() -> None:
    path = _require("deeplabv3_mnv2_dm05_pascal_quant.tflite")
    with pytest.raises(MobilenetError) as error:
        import_tflite(path)
    message = str(error.value)
    assert "mobilenet_v2_0.5_513" in message and "op 5 (CONV_2D" in message and "expanded_conv_1/project" in message
    assert "not come from a classifier" in message


def test_tiny_non_mobilenet_graph_names_the_op(tmp_path: Path) -> None:
    writer = GraphWriter(32)
    x = writer.conv(writer.input, np.ones((8, 3, 3, 3), np.float32), np.zeros(8, np.float32), stride=1, act="RELU")
    x = writer.mean(x)
    x = writer.op("FULLY_CONNECTED", [x, writer.const(np.ones((5, 8), np.float32)), -1], [1, 5])
    path = writer.save(tmp_path / "tiny.tflite", x)
    with pytest.raises(MobilenetError, match=r"op 0 \(CONV_2D, output 'conv0'\): stride 1x1, expected a 3x3 conv"):
        import_tflite(path)


def test_dequantize_per_channel_uses_the_quantized_dimension() -> None:
    q = np.arange(12, dtype=np.int8).reshape(1, 2, 2, 3)
    values = dequantize(q, np.array([1.0, 0.5, 0.25]), np.array([0, 0, 0]), axis=3)
    np.testing.assert_allclose(values[0, 1, 1], [9.0, 5.0, 2.75])
    np.testing.assert_allclose(dequantize(np.array([130], np.uint8), np.array([0.5]), np.array([128])), [1.0])


# ----------------------------------------------------------------------------------------------------------
# V3: no official file ships with the test data, so export a random V3 to a float TFLite graph ourselves,
# check the interpreter agrees with it (the writer is right), then import it back.
# ----------------------------------------------------------------------------------------------------------


class GraphWriter:
    """A float32 TFLite graph built with the schema's object API, written in TF's own idioms."""

    def __init__(
        self, size: int, rescale_input: bool = False, float16_weights: bool = False, int8_weights: str | None = None
    ) -> None:
        self.float16_weights = float16_weights
        self.int8_weights = int8_weights  # "dequantize": int8 behind a DEQUANTIZE op; "hybrid": read by the conv
        self.tensors: list[schema.TensorT] = []
        self.buffers: list[schema.BufferT] = [schema.BufferT()]
        self.ops: list[schema.OperatorT] = []
        self.codes: list[int] = []
        self.shapes: dict[int, list[int]] = {}
        self.input = self.tensor("input", [1, size, size, 3])
        self.image = self.input
        if rescale_input:  # Keras' Rescaling(1/127.5, offset=-1) on raw pixels
            scaled = self.op("MUL", [self.input, self.const(np.float32(1 / 127.5))], [1, size, size, 3])
            self.image = self.op("ADD", [scaled, self.const(np.float32(-1.0))], [1, size, size, 3])

    def tensor(self, name: str, shape: list[int], data: np.ndarray | None = None) -> int:
        tensor = schema.TensorT()
        tensor.name, tensor.shape = name.encode(), list(shape)
        kinds = {np.dtype(np.int32): schema.TensorType.INT32, np.dtype(np.float16): schema.TensorType.FLOAT16}
        tensor.type = kinds.get(data.dtype, schema.TensorType.FLOAT32) if data is not None else 0  # 0: FLOAT32
        tensor.buffer = 0
        if data is not None:
            buffer = schema.BufferT()
            buffer.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
            self.buffers.append(buffer)
            tensor.buffer = len(self.buffers) - 1
        self.tensors.append(tensor)
        self.shapes[len(self.tensors) - 1] = list(shape)
        return len(self.tensors) - 1

    def const(self, values: np.ndarray) -> int:
        values = np.asarray(values)
        return self.tensor(f"const{len(self.tensors)}", list(values.shape), values)

    def op(self, kind: str, inputs: list[int], shape: list[int], options: object = None, act: str = "NONE") -> int:
        code = getattr(schema.BuiltinOperator, kind)
        if code not in self.codes:
            self.codes.append(code)
        out = self.tensor(f"{kind.lower()}{len(self.ops)}", shape)
        operator = schema.OperatorT()
        operator.opcodeIndex, operator.inputs, operator.outputs = self.codes.index(code), inputs, [out]
        if options is None and kind in ("ADD", "MUL"):
            options = getattr(schema, kind.capitalize() + "OptionsT")()
        if options is not None:
            if hasattr(options, "fusedActivationFunction"):
                options.fusedActivationFunction = getattr(schema.ActivationFunctionType, act)
            operator.builtinOptionsType = getattr(schema.BuiltinOptions, type(options).__name__[:-1])
            operator.builtinOptions = options
        self.ops.append(operator)
        return out

    def conv(
        self, x: int, weights: np.ndarray, bias: np.ndarray, stride: int, act: str, depthwise: bool = False
    ) -> int:
        _, h, w, _ = self.shapes[x]
        options = schema.DepthwiseConv2DOptionsT() if depthwise else schema.Conv2DOptionsT()
        options.padding, options.strideH, options.strideW = schema.Padding.SAME, stride, stride
        options.dilationHFactor = options.dilationWFactor = 1
        if depthwise:
            options.depthMultiplier = 1
        channels = weights.shape[3] if depthwise else weights.shape[0]
        shape = [1, -(-h // stride), -(-w // stride), channels]
        kind = "DEPTHWISE_CONV_2D" if depthwise else "CONV_2D"
        kernel = self.int8_kernel(weights, axis=3 if depthwise else 0) if self.int8_weights else self.const(weights)
        if self.float16_weights:  # how TFLite's float16 releases store weights: unpacked by a DEQUANTIZE
            kernel = self.op("DEQUANTIZE", [self.const(weights.astype(np.float16))], list(weights.shape))
        if self.int8_weights == "dequantize":
            kernel = self.op("DEQUANTIZE", [kernel], list(weights.shape))
        out = self.op(kind, [x, kernel, self.const(bias)], shape, options, act)
        self.tensors[out].name = f"conv{len(self.ops) - 1}".encode()
        return out

    def int8_kernel(self, weights: np.ndarray, axis: int) -> int:
        """Symmetric int8 per-channel weights along ``axis`` (TF2's quantized_dimension: 0 conv, 3 depthwise)."""
        others = tuple(i for i in range(weights.ndim) if i != axis)
        scale = np.abs(weights).max(axis=others) / 127.0
        scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
        shape = [1] * weights.ndim
        shape[axis] = -1
        q = np.clip(np.round(weights / scale.reshape(shape)), -127, 127).astype(np.int8)
        kernel = self.tensor(f"const{len(self.tensors)}", list(weights.shape), q)
        quantization = schema.QuantizationParametersT()
        quantization.scale, quantization.zeroPoint = scale.tolist(), [0] * scale.size
        quantization.quantizedDimension = axis
        self.tensors[kernel].type, self.tensors[kernel].quantization = schema.TensorType.INT8, quantization
        return kernel

    def mean(self, x: int) -> int:
        options = schema.ReducerOptionsT()
        options.keepDims = True
        return self.op("MEAN", [x, self.const(np.array([1, 2], np.int32))], [1, 1, 1, self.shapes[x][3]], options)

    def save(self, path: Path, output: int) -> Path:
        import flatbuffers

        graph = schema.SubGraphT()
        graph.tensors, graph.operators, graph.inputs, graph.outputs = self.tensors, self.ops, [self.input], [output]
        model = schema.ModelT()
        model.version, model.subgraphs, model.buffers = 3, [graph], self.buffers
        model.operatorCodes = []
        for code in self.codes:
            entry = schema.OperatorCodeT()
            entry.builtinCode, entry.deprecatedBuiltinCode, entry.version = code, min(code, 127), 1
            model.operatorCodes.append(entry)
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        path.write_bytes(bytes(builder.Output()))
        return path


_FUSABLE = {nn.ReLU: "RELU", nn.ReLU6: "RELU6", nn.Identity: "NONE"}


def _activate(writer: GraphWriter, x: int, module: nn.Module) -> int:
    """Hard-swish as its own op and the hard-sigmoid spelled out, as TF's converter writes them."""
    if isinstance(module, nn.Hardswish):
        return writer.op("HARD_SWISH", [x], writer.shapes[x])
    if isinstance(module, nn.Hardsigmoid):
        shifted = writer.op("ADD", [x, writer.const(np.float32(3.0))], writer.shapes[x], act="RELU6")
        return writer.op("MUL", [shifted, writer.const(np.float32(1 / 6))], writer.shapes[x])
    return x


def _export_unit(writer: GraphWriter, x: int, unit: ConvBnAct) -> int:
    bn, conv = unit.bn, unit.conv
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
    weights = (conv.weight.detach() * scale.view(-1, 1, 1, 1)).numpy()
    bias = (bn.bias - bn.running_mean * scale).detach().numpy()
    depthwise = conv.groups > 1
    tf_weights = weights[:, 0].transpose(1, 2, 0)[None] if depthwise else weights.transpose(0, 2, 3, 1)
    act = _FUSABLE.get(type(unit.act), "NONE")
    out = writer.conv(x, np.ascontiguousarray(tf_weights), bias, conv.stride[0], act, depthwise)
    return _activate(writer, out, unit.act)


def _export_1x1(writer: GraphWriter, x: int, weight: torch.Tensor, bias: torch.Tensor, act: nn.Module) -> int:
    w = weight.detach().reshape(weight.shape[0], 1, 1, -1).numpy()
    out = writer.conv(x, np.ascontiguousarray(w), bias.detach().numpy(), 1, _FUSABLE.get(type(act), "NONE"))
    return _activate(writer, out, act)


def _export_se(writer: GraphWriter, x: int, se: SqueezeExcite) -> int:
    pooled = writer.mean(x)
    squeezed = _export_1x1(writer, pooled, se.reduce.weight, se.reduce.bias, se.act)
    gate = _export_1x1(writer, squeezed, se.expand.weight, se.expand.bias, se.gate)
    return writer.op("MUL", [x, gate], writer.shapes[x])


def export_float_tflite(
    model: mobilenet.MobileNet, path: Path, rescale_input: bool, float16: bool = False, int8_weights: str | None = None
) -> Path:
    writer = GraphWriter(model.config.resolution, rescale_input, float16, int8_weights)
    x = writer.image
    for layer in model.features:
        if isinstance(layer, ConvBnAct):
            x = _export_unit(writer, x, layer)
            continue
        assert isinstance(layer, InvertedResidual)
        block_input = x
        if isinstance(layer.expand, ConvBnAct):
            x = _export_unit(writer, x, layer.expand)
        x = _export_unit(writer, x, layer.depthwise)
        if isinstance(layer.se, SqueezeExcite):
            x = _export_se(writer, x, layer.se)
        x = _export_unit(writer, x, layer.project)
        if layer.use_residual:
            x = writer.op("ADD", [x, block_input], writer.shapes[x])
    x = writer.mean(x)
    x = _export_1x1(writer, x, model.pre_logits[0].weight, model.pre_logits[0].bias, model.pre_logits[1])
    x = _export_1x1(writer, x, model.classifier.weight, model.classifier.bias, nn.Identity())
    options = schema.ReshapeOptionsT()
    options.newShape = [1, model.config.num_classes]
    shape = writer.const(np.array([1, model.config.num_classes], np.int32))
    x = writer.op("RESHAPE", [x, shape], [1, model.config.num_classes], options)
    return writer.save(path, x)


def _randomize_batchnorm(model: nn.Module) -> None:
    generator = torch.Generator().manual_seed(1)
    for bn in model.modules():
        if isinstance(bn, nn.BatchNorm2d):
            n = bn.num_features
            bn.weight.data = torch.rand(n, generator=generator) + 0.5
            bn.bias.data = torch.randn(n, generator=generator) * 0.1
            bn.running_mean = torch.randn(n, generator=generator) * 0.1
            bn.running_var = torch.rand(n, generator=generator) + 0.5


def _run_interpreter(path: Path, inputs: np.ndarray) -> torch.Tensor:
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    outputs = []
    for image in inputs:
        interpreter.set_tensor(source["index"], image[None])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(target["index"])[0])
    return torch.from_numpy(np.stack(outputs))


@pytest.mark.parametrize(
    ("name", "float16"), [("mobilenet_v3_large_1.0_64", False), ("mobilenet_v3_small_0.75_64", True)]
)
def test_v3_float_graph_round_trips(tmp_path: Path, name: str, float16: bool) -> None:
    torch.manual_seed(0)
    original = mobilenet.create_model(name, padding="tf_same", num_classes=10).eval()
    _randomize_batchnorm(original)
    path = export_float_tflite(original, tmp_path / f"{name}.tflite", rescale_input=True, float16=float16)
    size = original.config.resolution
    pixels = np.random.default_rng(0).integers(0, 256, size=(2, size, size, 3)).astype(np.float32)
    x = torch.from_numpy(pixels / 127.5 - 1).permute(0, 3, 1, 2)
    reference = _run_interpreter(path, pixels)  # raw pixels: the graph rescales them itself, as Keras does
    with torch.inference_mode():
        expected = original(x)
    slack = 0.05 if float16 else 1e-3  # float16 weights round by ~1e-3 relative: checks the writer, loosely
    torch.testing.assert_close(reference, expected, rtol=slack, atol=slack)

    imported = import_tflite(path)
    assert imported.config.arch == original.config.arch
    assert imported.config.width_multiplier == original.config.width_multiplier
    assert (imported.config.num_classes, imported.preprocessing.labels_offset) == (10, 0)
    assert (imported.preprocessing.mean, imported.preprocessing.std) == ((0.5,) * 3, (0.5,) * 3)
    assert imported.weights_info["extra"]["quantization"] == ("float16" if float16 else "float32")
    assert imported.weights_info["extra"]["graph_output"] == "logits"
    with torch.inference_mode():
        torch.testing.assert_close(imported(x), reference, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("form", ["dequantize", "hybrid"])
def test_v3_with_int8_per_channel_weights_imports_the_quantized_values(tmp_path: Path, form: str) -> None:
    """A V3 whose weights are int8 per channel (TF2 weight-only / dynamic-range quantization) imports dequantized.

    "dequantize": int8 weights unpacked by DEQUANTIZE ops, float arithmetic; our import must equal the interpreter.
    "hybrid": the convs read int8 weights and quantize activations on the fly; equal up to that rounding.
    """
    torch.manual_seed(0)
    original = mobilenet.create_model("mobilenet_v3_small_0.75_64", padding="tf_same", num_classes=10).eval()
    _randomize_batchnorm(original)
    path = export_float_tflite(original, tmp_path / f"v3_{form}.tflite", rescale_input=True, int8_weights=form)
    pixels = np.random.default_rng(0).integers(0, 256, size=(4, 64, 64, 3)).astype(np.float32)
    reference = _run_interpreter(path, pixels).double()
    imported = import_tflite(path)
    assert imported.weights_info["extra"]["quantization"] == "int8 per-channel"
    assert imported.config.arch == "mobilenet_v3_small" and imported.config.width_multiplier == 0.75
    x = torch.from_numpy(pixels / 127.5 - 1).permute(0, 3, 1, 2)
    with torch.inference_mode():
        ours, unquantized = imported(x).double(), original(x).double()
    spread = float(reference.std())
    weight_rounding = float((unquantized - reference).abs().max())
    assert weight_rounding > 1e-3 * spread  # the int8 weights change the output visibly...
    error = float((ours - reference).abs().max())
    assert error < (1e-5 if form == "dequantize" else 0.05) * spread  # ...and the import has exactly those weights
    print(f"{form}: import vs interpreter {error:.1e}, float weights vs interpreter {weight_rounding:.1e}, "
          f"logit spread {spread:.1e}")
    assert error < weight_rounding


def test_v3_with_wrong_gate_names_the_op(tmp_path: Path) -> None:
    torch.manual_seed(0)
    original = mobilenet.create_model("mobilenet_v3_small_1.0_64", padding="tf_same", num_classes=10).eval()
    for se in original.modules():
        if isinstance(se, SqueezeExcite):
            se.gate = nn.ReLU6()  # exported as a fused RELU6 where the hard-sigmoid belongs
    path = export_float_tflite(original, tmp_path / "bad_gate.tflite", rescale_input=False)
    with pytest.raises(MobilenetError, match=r"op \d+ \(CONV_2D.*activation after it is relu6.*se.expand.*hsigmoid"):
        import_tflite(path)


def test_read_tflite_lists_ops_in_execution_order() -> None:
    graph = read_tflite(_require(MODELS["v2_tf2_ptq"][0]))
    kinds = [op.type for op in graph.ops]
    assert kinds[:2] == ["QUANTIZE", "CONV_2D"] and kinds[-3:] == ["RESHAPE", "SOFTMAX", "QUANTIZE"]
    assert kinds.count("DEPTHWISE_CONV_2D") == 17 and kinds.count("ADD") == 10
    weights = graph.tensors[graph.ops[1].inputs[1]]
    assert weights.dtype == "INT8" and weights.scale is not None and weights.scale.size == 32


@pytest.mark.parametrize("key", list(MODELS))
def test_reader_constants_equal_the_interpreters_tensor_details(key: str) -> None:
    """Every weight our schema reader takes is what the official interpreter holds, with the same quantization."""
    path = _require(MODELS[key][0])
    graph = read_tflite(path)
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    constants = [t for t in graph.tensors if t.data is not None]
    assert len(constants) > 50
    for tensor in constants:
        detail = details[tensor.index]
        params = detail["quantization_parameters"]
        np.testing.assert_array_equal(interpreter.get_tensor(tensor.index), tensor.data, err_msg=tensor.name)
        assert tuple(detail["shape"]) == tensor.shape and detail["dtype"] == tensor.data.dtype
        if tensor.quantized:
            np.testing.assert_array_equal(params["scales"], tensor.scale.astype(np.float32), err_msg=tensor.name)
            np.testing.assert_array_equal(params["zero_points"], tensor.zero_point, err_msg=tensor.name)
            assert params["quantized_dimension"] == tensor.quantized_dimension
        else:
            assert params["scales"].size == 0
