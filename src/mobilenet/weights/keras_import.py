"""Import Keras' MobileNets (``keras.applications``: MobileNet, MobileNetV2, MobileNetV3Small/Large) into our model.

Sources: a ``.keras`` file, a whole-model ``.h5`` file, a weights-only ``.h5`` file in the Keras 2 layout (the
files Keras downloads for ``weights="imagenet"``), or a ``keras.Model`` in memory. Files are read through Keras 3
(``KERAS_BACKEND`` defaults to ``torch`` here) and h5py.

How the variant is recognised and mapped, following :mod:`mobilenet.weights.tflite_import`:

- The number of depthwise convs picks the family (13 for V1, 17 for V2, 15 for V3-large, 11 for V3-small); the
  conv widths narrow down the width multiplier; the input shape gives the resolution and the classifier the number
  of classes. A model is built for each candidate and the Keras layers that hold weights are matched, in order,
  against its layers; the first candidate whose every kernel shape, stride, padding and activation fits wins.
- Kernels: Keras convs are HWIO (OIHW here), depthwise kernels HWC1 (C1HW here), Dense kernels (in, out), and the
  1x1 convs Keras uses as classifiers and V3's head become our ``nn.Linear`` layers. BatchNorm keeps its gamma,
  beta, moving mean and variance, epsilon and momentum (``bn_momentum = 1 - keras momentum``).
- Padding: V2 and V3 pad stride-2 depthwise convs with ``correct_pad`` then run them VALID, and Keras' "same"
  is TF SAME; both are our ``padding="tf_same"``. V1 pads its stride-2 depthwise convs by one pixel at the
  bottom/right whatever the size, which is TF SAME only when the map entering them is even: true at every
  resolution that is a multiple of 32 (Keras' 128, 160, 192, 224). Any other input size is refused, since no
  padding mode of ours reproduces it there.
- Activations (ReLU6, ReLU, hard-swish, V3's hard-sigmoid spelled ``ReLU6(x + 3) / 6``) are evaluated through
  Keras itself and compared with ours, so any spelling of the same function is accepted.
- Preprocessing: layers between the input and the first conv (V3's ``Rescaling(1/127.5, -1)``) are evaluated on
  pixel values; without them the network takes Keras' ``preprocess_input`` range [-1, 1]. Either way the result is
  ``mean = std = 0.5`` on [0, 1] pixels, with TF-slim's bilinear resize and 0.875 center crop.

Keras' V3 keeps a 16-channel stem for every alpha, ours scales it like every other layer; the two agree for
alpha in [0.75, 1.25), and other alphas import with ``stem_channels=16``. Weights-only files carry no graph:
there the input size (224 unless given), the activations and the padding are those of ``keras.applications``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mobilenet.checks import is_integer
from mobilenet.errors import MobilenetError
from mobilenet.models.builder import MIN_RESOLUTION, MobileNet
from mobilenet.models.layers import ConvBnAct, DepthwiseSeparable, InvertedResidual, SamePad2d, SqueezeExcite
from mobilenet.models.preprocessing import INCEPTION_MEAN, INCEPTION_STD, Preprocessing
from mobilenet.models.registry import (
    RELEASED_MODELS,
    create_model,
)
from mobilenet.models.specs import ARCHITECTURES, ArchSpec
from mobilenet.weights.candidates import Candidate, search_fitting_model, width_candidates
from mobilenet.weights.tflite_import import (
    _SAMPLES,
    ACTIVATIONS,
    _activation_name,
    _close,
    _depthwise_count,
    _identify,
    _load_state,
    _sha256,
    labels_for_outputs,
)

LICENSE_NOTE = (
    "as distributed with the source file; the weights of keras.applications MobileNets are under the Apache License 2.0"
)
KERAS_DEFAULT_EPS = 1e-3  # keras.layers.BatchNormalization's default, used by every keras.applications MobileNet
KERAS_DEFAULT_RESOLUTION = 224
_LINEARS = frozenset({"Conv2D", "Dense"})


# ----------------------------------------------------------------------------------------------------------
# Reading Keras models and files
# ----------------------------------------------------------------------------------------------------------


@dataclass
class KerasLayer:
    """One Keras layer: its class, weights by short name (kernel, bias, gamma, ...), config and graph node."""

    name: str
    kind: str  # the Keras class name: Conv2D, DepthwiseConv2D, BatchNormalization, Dense, ...
    weights: dict[str, np.ndarray]
    config: dict[str, Any] = field(default_factory=dict)  # empty for weights-only files
    node: Any = None  # the layer's keras Node when the graph is known


@dataclass
class KerasSource:
    """What was read: the layers in model order, and the graph when there is one."""

    label: str  # the file name, or the in-memory model's name
    layers: list[KerasLayer]
    graph: KerasGraph | None
    sha256: str | None = None
    input_shape: tuple[Any, ...] | None = None  # from a whole-model .h5 read without its graph

    @property
    def has_configs(self) -> bool:
        """Whether the layers' classes and options are known (not a weights-only file)."""
        return any(layer.config for layer in self.layers)

    @property
    def weighted(self) -> list[KerasLayer]:
        return [layer for layer in self.layers if layer.weights]


def _keras() -> Any:
    # Keras 3 picks its backend once, at import; torch is the one this package always has.
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError:
        raise MobilenetError("reading Keras models needs keras 3 and h5py: pip install 'mobilenet[keras]'") from None
    except Exception as exc:  # Keras raises assorted errors when its backend cannot load
        backend = os.environ.get("KERAS_BACKEND")
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise MobilenetError(
            f"keras failed to start with KERAS_BACKEND={backend!r} ({type(exc).__name__}: {first}); "
            "unset KERAS_BACKEND or set it to 'torch'"
        ) from None
    if not str(getattr(keras, "__version__", "0")).startswith("3"):
        raise MobilenetError(f"Keras import needs keras 3, found {keras.__version__}; pip install 'keras>=3'")
    return keras


def read_keras(source: Any) -> KerasSource:
    """Read a ``.keras``/``.h5`` file or an in-memory ``keras.Model`` into layers (and a graph when it has one)."""
    if not isinstance(source, (str, os.PathLike)):
        if not hasattr(source, "layers") or not hasattr(source, "inputs"):
            raise MobilenetError(f"expected a path to a .keras/.h5 file or a keras.Model, got {type(source).__name__}")
        return _from_model(source, f"keras.Model {getattr(source, 'name', '?')!r}")
    file = Path(source)
    if not file.is_file():
        raise MobilenetError(f"Keras file not found: {file}")
    suffix = file.suffix.lower()
    if suffix == ".keras":
        found = _from_model(_load_model(file), file.name)
    elif suffix in (".h5", ".hdf5"):
        found = _read_h5(file)
    else:
        raise MobilenetError(f"cannot read {file.name!r} as a Keras model: expected a .keras or .h5 file")
    found.sha256 = _sha256(file)
    return found


def _load_model(file: Path) -> Any:
    keras = _keras()
    try:
        return keras.saving.load_model(str(file), compile=False, safe_mode=True)
    except Exception as exc:  # corrupt zips, unknown custom layers and old formats all fail differently
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise MobilenetError(
            f"Keras could not load {file.name} ({type(exc).__name__}: {first[:200]}); "
            "is it a complete .keras/.h5 model saved by Keras?"
        ) from None


def _read_h5(file: Path) -> KerasSource:
    try:
        import h5py
    except ImportError:
        raise MobilenetError("reading .h5 files needs h5py: pip install 'mobilenet[keras]'") from None
    try:
        with h5py.File(file, "r") as handle:
            configs, input_shape = _h5_model_config(handle)
            group = handle["model_weights"] if "model_weights" in handle else handle
            stored = KerasSource(file.name, _h5_layers(group, configs), None, input_shape=input_shape)
            keras3_weights = "layers" in handle and not stored.layers
    except (OSError, KeyError, ValueError) as exc:
        raise MobilenetError(f"{file.name} is not a readable Keras HDF5 file ({exc}); is it truncated?") from None
    if configs:
        try:
            return _from_model(_load_model(file), file.name)
        except MobilenetError:
            if not stored.layers:
                raise
            # Keras 3 cannot rebuild every graph from the legacy format (V3's `x + 3.0` ops): the layer configs and
            # weights stored beside it still say everything but the activations and the padding.
            return stored
    if stored.layers:
        return stored
    if keras3_weights:
        raise MobilenetError(
            f"{file.name} is a Keras 3 .weights.h5 file, which keeps no layer order; build the model with "
            "keras.applications (weights=path) and pass the model to import_keras"
        )
    raise MobilenetError(f"{file.name} holds neither a Keras model nor Keras weights (no model_config/layer_names)")


def _h5_model_config(handle: Any) -> tuple[dict[str, tuple[str, dict[str, Any]]], tuple[Any, ...] | None]:
    """Each layer's class and config, and the input shape, from a whole-model file's ``model_config``."""
    raw = handle.attrs.get("model_config")
    if raw is None:
        return {}, None
    config = json.loads(raw.decode("utf8") if isinstance(raw, bytes) else str(raw))
    layers: dict[str, tuple[str, dict[str, Any]]] = {}
    input_shape = None
    for entry in config.get("config", {}).get("layers", []):
        layer_config = entry.get("config", {})
        name = layer_config.get("name", entry.get("name"))
        layers[name] = (entry.get("class_name", "Unknown"), layer_config)
        if entry.get("class_name") == "InputLayer":
            input_shape = tuple(layer_config.get("batch_shape") or layer_config.get("batch_input_shape") or ())
    return layers, input_shape


def _h5_names(group: Any, name: str) -> list[str]:
    """A Keras string-list attribute; long lists are split over ``name0``, ``name1``, ..."""
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, chunk = [], 0
        while f"{name}{chunk}" in group.attrs:
            values += list(group.attrs[f"{name}{chunk}"])
            chunk += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _short_name(path: str) -> str:
    """'conv_dw_1/depthwise_kernel:0' -> 'depthwise_kernel'."""
    return path.split("/")[-1].split(":")[0]


def _h5_layers(group: Any, configs: dict[str, tuple[str, dict[str, Any]]]) -> list[KerasLayer]:
    layers = []
    for name in _h5_names(group, "layer_names"):
        if name not in group:
            continue
        weights = {}
        for path in _h5_names(group[name], "weight_names"):
            weights[_short_name(path)] = np.asarray(group[name][path], dtype=np.float32)
        kind, config = configs.get(name, (_kind_from_weights(weights), {}))
        layers.append(KerasLayer(name, kind, _normalise(weights), config))
    return layers


def _kind_from_weights(weights: dict[str, np.ndarray]) -> str:
    """A weights-only file names no layer class: tell it from the weights' names and shapes."""
    if "gamma" in weights or "moving_mean" in weights:
        return "BatchNormalization"
    kernel = weights.get("depthwise_kernel", weights.get("kernel"))
    if kernel is None:
        return "Unknown"
    if kernel.ndim == 2:
        return "Dense"
    # A KxK kernel with one output per input channel is depthwise; MobileNets' only full KxK conv is the stem.
    depthwise = "depthwise_kernel" in weights or (kernel.ndim == 4 and kernel.shape[0] > 1 and kernel.shape[3] == 1)
    return "DepthwiseConv2D" if depthwise else "Conv2D"


def _normalise(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Keras 2 called the depthwise kernel 'depthwise_kernel', Keras 3 calls it 'kernel'."""
    if "depthwise_kernel" in weights:
        weights = dict(weights)
        weights["kernel"] = weights.pop("depthwise_kernel")
    return weights


def _from_model(model: Any, label: str) -> KerasSource:
    # A Sequential model runs a functional model inside; its graph is the one to read.
    model = model if hasattr(model, "_nodes_by_depth") else getattr(model, "_functional", None) or model
    if not hasattr(model, "_nodes_by_depth"):
        raise MobilenetError(
            f"{label} is a {type(model).__name__}, not a functional Keras model; build it with keras.applications"
        )
    graph = KerasGraph(model)
    layers = []
    for layer in model.layers:
        weights = {_short_name(str(getattr(v, "path", v.name))): _numpy(v).astype(np.float32) for v in layer.weights}
        try:
            config = layer.get_config()
        except Exception:  # a custom layer without get_config: shapes still identify it
            config = {}
        node = graph.node_of(layer)
        layers.append(KerasLayer(layer.name, type(layer).__name__, _normalise(weights), config, node))
    return KerasSource(label, layers, graph)


def _numpy(value: Any) -> np.ndarray:
    keras = _keras()
    return np.asarray(keras.ops.convert_to_numpy(value))


class KerasGraph:
    """The data flow of a functional Keras model, for what the weights alone cannot say."""

    def __init__(self, model: Any) -> None:
        depths = sorted(model._nodes_by_depth, reverse=True)  # inputs have the highest depth
        self.nodes = [node for depth in depths for node in model._nodes_by_depth[depth]]
        self.consumers: dict[int, list[Any]] = {}
        self.producers: dict[int, Any] = {}
        self.by_operation: dict[int, Any] = {}
        for node in self.nodes:
            for tensor in node.input_tensors:
                self.consumers.setdefault(id(tensor), []).append(node)
            for tensor in node.outputs:
                self.producers[id(tensor)] = node
            self.by_operation.setdefault(id(node.operation), node)
        self.inputs = list(model.inputs)
        self.outputs = list(model.outputs)

    def node_of(self, layer: Any) -> Any:
        return self.by_operation.get(id(layer))

    def chain(self, tensor: Any) -> tuple[list[Any], Any]:
        """The element-wise ops applied to ``tensor`` alone, up to the first branch, and the tensor they end in."""
        nodes = []
        while True:
            readers = self.consumers.get(id(tensor), [])
            if len(readers) != 1 or not _elementwise(readers[0], tensor):
                return nodes, tensor
            nodes.append(readers[0])
            tensor = readers[0].outputs[0]

    def evaluate(self, nodes: list[Any], start: Any, values: np.ndarray) -> np.ndarray:
        """Run ``nodes`` (a chain from :meth:`chain`) on ``values`` in place of ``start``, through Keras."""
        results = {id(start): values}
        current = values
        for node in nodes:
            args, kwargs = node.arguments.fill_in(results)
            current = _numpy(node.operation(*args, **kwargs))
            results[id(node.outputs[0])] = current
        return current


def _elementwise(node: Any, tensor: Any) -> bool:
    """One value in, the same shape out, no weights: an activation, a rescaling, a dropout."""
    inputs = node.input_tensors
    return (
        len(inputs) >= 1
        and all(t is tensor for t in inputs)
        and len(node.outputs) == 1
        and tuple(node.outputs[0].shape) == tuple(tensor.shape)
        and not getattr(node.operation, "weights", None)
    )


# ----------------------------------------------------------------------------------------------------------
# Matching the layers against a model
# ----------------------------------------------------------------------------------------------------------


class _Mismatch(Exception):
    """The layers stop fitting a candidate model; ``progress`` says how far the candidate got."""

    def __init__(self, message: str, progress: int) -> None:
        super().__init__(message)
        self.progress = progress


class _Matcher:
    """Walks the Keras layers that hold weights along a model's layers, collecting our state dict."""

    def __init__(self, source: KerasSource, model: MobileNet) -> None:
        self.source = source
        self.graph = source.graph
        self.model = model
        self.layers = source.weighted
        self.position = 0
        self.state: dict[str, torch.Tensor] = {}
        self.bn_eps: set[float] = set()
        self.bn_momentum: set[float] = set()

    # --- bookkeeping ---

    def fail(self, layer: KerasLayer | None, message: str) -> _Mismatch:
        place = f"layer '{layer.name}' ({layer.kind})" if layer is not None else "the end of the model"
        return _Mismatch(f"{place}: {message}", self.position)

    def next(self, kinds: frozenset[str], what: str) -> KerasLayer:
        if self.position >= len(self.layers):
            raise self.fail(None, f"no layer left; expected {what}")
        layer = self.layers[self.position]
        if layer.kind not in kinds:
            raise self.fail(layer, f"expected {what}")
        self.position += 1
        return layer

    def weight(self, layer: KerasLayer, key: str, shape: tuple[int, ...], what: str) -> np.ndarray:
        values = layer.weights.get(key)
        if values is None:
            raise self.fail(layer, f"has no {key}; expected {what}")
        if values.shape != shape:
            raise self.fail(layer, f"its {key} is shaped {list(values.shape)}, expected {list(shape)} for {what}")
        return values

    def put(self, name: str, values: np.ndarray, like: torch.Tensor) -> None:
        self.state[name] = torch.as_tensor(np.ascontiguousarray(values, dtype=np.float32)).reshape(like.shape).clone()

    # --- the model's parts ---

    def match(self) -> None:
        for name, layer in self.model.features.named_children():
            prefix = f"features.{name}"
            if isinstance(layer, ConvBnAct):
                self.conv(prefix, layer)
            elif isinstance(layer, DepthwiseSeparable):
                self.conv(f"{prefix}.depthwise", layer.depthwise)
                self.conv(f"{prefix}.pointwise", layer.pointwise)
            elif isinstance(layer, InvertedResidual):
                self.bottleneck(prefix, layer)
            else:
                raise MobilenetError(f"Keras import does not know how to fill {type(layer).__name__} ({prefix})")
        self.head()
        if self.position < len(self.layers):
            raise self.fail(self.layers[self.position], "is not part of a MobileNet (left over after every layer)")

    def bottleneck(self, prefix: str, block: InvertedResidual) -> None:
        if isinstance(block.expand, ConvBnAct):
            self.conv(f"{prefix}.expand", block.expand)
        self.conv(f"{prefix}.depthwise", block.depthwise)
        if isinstance(block.se, SqueezeExcite):
            self.linear(f"{prefix}.se.reduce", block.se.reduce, _activation_name(block.se.act))
            self.linear(f"{prefix}.se.expand", block.se.expand, _activation_name(block.se.gate))
        self.conv(f"{prefix}.project", block.project)

    def conv(self, prefix: str, unit: ConvBnAct) -> None:
        conv = unit.conv
        depthwise = conv.groups > 1
        k, stride = conv.kernel_size[0], conv.stride[0]
        what = f"a {k}x{k} {'depthwise ' if depthwise else ''}conv, stride {stride}, for {prefix}"
        layer = self.next(frozenset({"DepthwiseConv2D" if depthwise else "Conv2D"}), what)
        if depthwise:
            kernel = layer.weights.get("kernel")
            if kernel is not None and kernel.ndim == 4 and kernel.shape[3] != 1:
                raise self.fail(layer, f"depth_multiplier {kernel.shape[3]}; only 1 is supported")
            kernel = self.weight(layer, "kernel", (k, k, conv.out_channels, 1), what)
            weights = kernel[:, :, :, 0].transpose(2, 0, 1)[:, None]  # HWC1 -> C1HW
        else:
            kernel = self.weight(layer, "kernel", (k, k, conv.in_channels, conv.out_channels), what)
            weights = kernel.transpose(3, 2, 0, 1)  # HWIO -> OIHW
        self.check_geometry(layer, k, stride, what)
        self.put(f"{prefix}.conv.weight", weights, conv.weight)
        bias = layer.weights.get("bias")
        self.batchnorm(prefix, unit.bn, what, bias)
        self.check_activation(self.layers[self.position - 1], _activation_name(unit.act), prefix)

    def batchnorm(self, prefix: str, bn: nn.BatchNorm2d, what: str, conv_bias: np.ndarray | None) -> None:
        layer = self.next(frozenset({"BatchNormalization"}), f"the BatchNormalization after {what}")
        c = (bn.num_features,)
        mean = self.weight(layer, "moving_mean", c, "its BatchNorm")
        if conv_bias is not None:  # BN(x + b) == BN'(x) with the mean shifted by b
            mean = mean - conv_bias.reshape(c)
        # scale=False / center=False layers have no gamma / beta: they are fixed at 1 / 0.
        gamma = self.weight(layer, "gamma", c, "its BatchNorm") if "gamma" in layer.weights else np.ones(c)
        beta = self.weight(layer, "beta", c, "its BatchNorm") if "beta" in layer.weights else np.zeros(c)
        self.put(f"{prefix}.bn.weight", gamma, bn.weight)
        self.put(f"{prefix}.bn.bias", beta, bn.bias)
        self.put(f"{prefix}.bn.running_mean", mean, bn.running_mean)  # type: ignore[arg-type]
        self.put(f"{prefix}.bn.running_var", self.weight(layer, "moving_variance", c, "its BatchNorm"), bn.running_var)  # type: ignore[arg-type]
        self.bn_eps.add(float(layer.config.get("epsilon", KERAS_DEFAULT_EPS)))
        if "momentum" in layer.config:
            self.bn_momentum.add(float(layer.config["momentum"]))

    def linear(self, prefix: str, module: nn.Module, act: str | None) -> None:
        """A 1x1 Conv2D or a Dense with bias: the squeeze-excite convs, V3's head and the classifier."""
        out_features, in_features = module.weight.shape[0], module.weight.shape[1]
        what = f"a 1x1 conv or dense layer {in_features}->{out_features} with bias for {prefix}"
        layer = self.next(_LINEARS, what)
        shape = (1, 1, in_features, out_features) if layer.kind == "Conv2D" else (in_features, out_features)
        kernel = self.weight(layer, "kernel", shape, what)
        self.put(f"{prefix}.weight", kernel.reshape(in_features, out_features).T, module.weight)
        self.put(f"{prefix}.bias", self.weight(layer, "bias", (out_features,), what), module.bias)
        self.check_activation(layer, act, prefix)

    def head(self) -> None:
        if isinstance(self.model.pre_logits, nn.Sequential):
            linear, act = self.model.pre_logits[0], self.model.pre_logits[1]
            self.linear("pre_logits.0", linear, _activation_name(act))
        if not isinstance(self.model.classifier, nn.Linear):
            raise MobilenetError("Keras import needs a model with a classifier")
        # The classifier may end in a softmax (Keras' default); our model returns logits either way.
        self.linear("classifier", self.model.classifier, None)

    # --- what only the graph tells ---

    def check_geometry(self, layer: KerasLayer, k: int, stride: int, what: str) -> None:
        config = layer.config
        if not config:
            return
        if tuple(config.get("strides", (1, 1))) != (stride, stride):
            raise self.fail(layer, f"strides {tuple(config.get('strides'))}, expected {what}")
        if tuple(config.get("dilation_rate", (1, 1))) != (1, 1):
            raise self.fail(layer, f"dilation {tuple(config.get('dilation_rate'))}, expected {what}")
        if config.get("data_format", "channels_last") != "channels_last":
            raise MobilenetError(f"{self.source.label}: channels_first Keras models are not supported")
        if k == 1 or config.get("padding") == "same" or self.graph is None or layer.node is None:
            return  # Keras' "same" is TF SAME, our tf_same; without the graph the padding layers are not known
        pad_node = self.graph.producers.get(id(layer.node.input_tensors[0]))
        if pad_node is None or type(pad_node.operation).__name__ != "ZeroPadding2D":
            raise self.fail(layer, f"VALID padding without a ZeroPadding2D before it, expected {what}")
        self.check_zero_padding(layer, pad_node, k, stride)

    def check_zero_padding(self, layer: KerasLayer, pad_node: Any, k: int, stride: int) -> None:
        (top, bottom), (left, right) = (tuple(p) for p in pad_node.operation.get_config()["padding"])
        _, height, width, _ = pad_node.input_tensors[0].shape
        if height is None or width is None:
            raise MobilenetError(
                f"{self.source.label}: the model was built without a fixed input size, so the padding before "
                f"'{layer.name}' cannot be checked; build it with input_shape=(224, 224, 3)"
            )
        same = SamePad2d(k, stride)
        if (top, bottom, left, right) != (*same._pad(height), *same._pad(width)):
            raise MobilenetError(
                f"{self.source.label}: '{layer.name}' pads its {height}x{width} input by {(top, bottom)}x"
                f"{(left, right)} where TF SAME pads {same._pad(height)}x{same._pad(width)}; Keras' MobileNet (V1) "
                "matches TF SAME only where every stride-2 depthwise conv sees an even size: rebuild the Keras "
                "model with an input size that is a multiple of 32 (its weights do not depend on the size)"
            )

    def check_activation(self, layer: KerasLayer, expected: str | None, where: str) -> None:
        """Evaluate, through Keras, what follows ``layer`` (its fused activation, then element-wise ops)."""
        if self.graph is None or layer.node is None or expected is None:
            return
        start = layer.node.outputs[0]
        ndim = len(start.shape)
        shape = (_SAMPLES.size,) + (1,) * (ndim - 2) + (int(start.shape[-1]),)
        samples = np.broadcast_to(_SAMPLES.reshape((-1,) + (1,) * (ndim - 1)), shape).astype(np.float32)
        nodes, _ = self.graph.chain(start)
        actual = self.graph.evaluate(nodes, start, _fused_activation(layer, samples))
        wanted = ACTIVATIONS[expected](samples.astype(np.float64))
        if actual.shape != wanted.shape or not _close(actual, wanted):
            found = _identify(actual.reshape(_SAMPLES.size, -1)[:, :1].reshape(_SAMPLES.shape)) if actual.size else "?"
            raise self.fail(layer, f"the activation after it is {found}, but {where} of our model uses {expected}")


def _fused_activation(layer: KerasLayer, values: np.ndarray) -> np.ndarray:
    """Keras layers may apply an activation themselves (``Conv2D(..., activation="relu")``)."""
    name = layer.config.get("activation")
    if name in (None, "linear"):
        return values
    keras = _keras()
    try:
        function = keras.activations.get(name)
    except (ValueError, TypeError):
        raise MobilenetError(f"layer '{layer.name}' uses an activation Keras cannot name: {name!r}") from None
    return _numpy(function(values))


# ----------------------------------------------------------------------------------------------------------
# Recognising the variant
# ----------------------------------------------------------------------------------------------------------


def _num_classes(source: KerasSource) -> int:
    weighted = source.weighted
    last = weighted[-1] if weighted else None
    if last is None or last.kind not in _LINEARS or "bias" not in last.weights:
        where = f"its last layer with weights is '{last.name}' ({last.kind})" if last else "it has no weights"
        raise MobilenetError(
            f"{source.label}: not a Keras MobileNet classifier ({where}); include_top=False models are not supported"
        )
    return int(last.weights["kernel"].shape[-1])


def _resolution(source: KerasSource, override: int | None) -> int:
    if override is not None:
        if not is_integer(override) or override < MIN_RESOLUTION:
            raise MobilenetError(f"--resolution must be an integer >= {MIN_RESOLUTION}, got {override!r}")
        return override
    if source.graph is not None:
        if len(source.graph.inputs) != 1:
            raise MobilenetError(
                f"{source.label}: the model has {len(source.graph.inputs)} inputs; a MobileNet has one"
            )
        shape = tuple(source.graph.inputs[0].shape)
    elif source.input_shape:
        shape = source.input_shape
    else:
        return KERAS_DEFAULT_RESOLUTION
    if len(shape) != 4 or shape[3] != 3:
        raise MobilenetError(f"{source.label}: input shaped {list(shape)}; a MobileNet takes [batch, R, R, 3] (NHWC)")
    if shape[1] is None and shape[2] is None:
        return KERAS_DEFAULT_RESOLUTION
    if shape[1] != shape[2]:
        raise MobilenetError(f"{source.label}: input shaped {list(shape)}; only square inputs are supported")
    return int(shape[1])


def _candidate_archs(source: KerasSource) -> tuple[list[str], int]:
    count = sum(layer.kind == "DepthwiseConv2D" for layer in source.weighted)
    exact = [arch for arch, spec in ARCHITECTURES.items() if _depthwise_count(spec) == count]
    if exact:
        return exact, count
    ranked = sorted(ARCHITECTURES, key=lambda arch: abs(_depthwise_count(ARCHITECTURES[arch]) - count))
    return ranked[:2], count


def _conv_widths(source: KerasSource) -> list[int]:
    return [int(layer.weights["kernel"].shape[-1]) for layer in source.weighted if layer.kind == "Conv2D"]


def _width_candidates(source: KerasSource, spec: ArchSpec) -> list[Candidate]:
    """Widths implied by the stem and by the last convs (the widest narrowing layer sits before the head)."""
    widths = _conv_widths(source)
    return width_candidates(spec, widths[0] if widths else None, widths[-5:])


@dataclass
class _Recognised:
    name: str
    num_classes: int
    matcher: _Matcher
    options: dict[str, Any]  # model options beyond the name: V3's fixed 16-channel stem


def recognise(source: KerasSource, resolution: int | None = None) -> _Recognised:
    """Find the model whose every layer fits the Keras layers, or explain where the closest one stops fitting."""
    classes = _num_classes(source)
    size = _resolution(source, resolution)
    archs, count = _candidate_archs(source)
    found = search_fitting_model(
        archs, lambda spec: _width_candidates(source, spec), size, classes,
        lambda model: _Matcher(source, model), _Mismatch,
    )
    if found.matcher is not None:
        return _Recognised(found.name, classes, found.matcher, found.options)
    best = found.closest
    hint = (
        ""
        if count in {_depthwise_count(s) for s in ARCHITECTURES.values()}
        else (f" (it has {count} depthwise convs; no MobileNet we know has that many)")
    )
    if best is None:
        raise MobilenetError(f"{source.label}: cannot map the model onto any MobileNet{hint}")
    raise MobilenetError(
        f"{source.label}: cannot map the Keras model onto a MobileNet{hint}; closest is {best[1]}, which stops "
        f"fitting at {best[2]}"
    )


# ----------------------------------------------------------------------------------------------------------
# Preprocessing, options and the public entry point
# ----------------------------------------------------------------------------------------------------------


def _preprocessing(source: KerasSource, resolution: int, num_classes: int) -> tuple[Preprocessing, str]:
    """The ``(x - mean) / std`` on [0, 1] pixels that the layers before the first conv stand for."""
    graph = source.graph
    nodes: list[Any] = []
    if graph is not None and graph.inputs:
        nodes, _ = graph.chain(graph.inputs[0])
    pixels = np.linspace(0.0, 1.0, 256)
    rescaling = [layer for layer in source.layers if layer.kind == "Rescaling"] if graph is None else []
    if rescaling:  # a whole-model .h5 read without its graph: the Rescaling layer's config says it all
        scale, offset = (
            np.broadcast_to(np.asarray(rescaling[0].config.get(k, d), np.float64), 3)
            for k, d in (("scale", 1.0), ("offset", 0.0))
        )
        mean, std = _fit_rescaling(source.label, pixels, pixels.reshape(-1, 1) * 255.0 * scale + offset)
        how = "the Rescaling layer in its config, fed pixels in [0, 255]"
    elif not nodes:
        mean, std = INCEPTION_MEAN, INCEPTION_STD
        how = "Keras' convention for MobileNets (inputs in [-1, 1]: preprocess_input, or V3's built-in Rescaling)"
    else:
        assert graph is not None
        values = np.repeat((pixels * 255.0).reshape(-1, 1, 1, 1), 3, axis=3).astype(np.float32)
        real = graph.evaluate(nodes, graph.inputs[0], values).reshape(256, 3).astype(np.float64)
        mean, std = _fit_rescaling(source.label, pixels, real)
        names = ", ".join(type(node.operation).__name__ for node in nodes)
        how = f"the layers at its input ({names}), fed pixels in [0, 255]"
    prep = Preprocessing(
        resolution=resolution,
        mean=tuple(mean),
        std=tuple(std),
        crop_pct=0.875,
        interpolation="bilinear",
        labels_offset=1 if num_classes == 1001 else 0,
    )
    return prep, how


def _fit_rescaling(label: str, pixels: np.ndarray, real: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean, std = [], []
    for channel in range(real.shape[1]):
        slope, intercept = np.polyfit(pixels, real[:, channel], 1)
        fitted = slope * pixels + intercept
        if slope <= 0 or np.max(np.abs(fitted - real[:, channel])) > 1e-3 * max(1.0, float(np.max(np.abs(real)))):
            raise MobilenetError(f"{label}: the layers before the first conv are not a rescaling of pixel values")
        mean.append(float(round(-intercept / slope, 6)))
        std.append(float(round(1.0 / slope, 6)))
    if np.allclose(mean, INCEPTION_MEAN, atol=1e-4) and np.allclose(std, INCEPTION_STD, atol=1e-4):
        return INCEPTION_MEAN, INCEPTION_STD
    return tuple(mean), tuple(std)


def _model_options(source: KerasSource, matcher: _Matcher) -> dict[str, Any]:
    """BatchNorm epsilon/momentum and dropout as the Keras model has them."""
    if len(matcher.bn_eps) > 1:
        raise MobilenetError(
            f"{source.label}: its BatchNorm layers use different epsilons {sorted(matcher.bn_eps)}; "
            "our model has one bn_eps"
        )
    options: dict[str, Any] = {"bn_eps": matcher.bn_eps.pop() if matcher.bn_eps else KERAS_DEFAULT_EPS}
    if len(matcher.bn_momentum) == 1:
        momentum = 1.0 - matcher.bn_momentum.pop()  # Keras' moving-average decay is PyTorch's 1 - momentum
        if 0 < momentum <= 1:
            options["bn_momentum"] = momentum
    if source.has_configs:
        rates = [float(layer.config.get("rate", 0.0)) for layer in source.layers if layer.kind == "Dropout"]
        options["dropout"] = rates[-1] if rates else 0.0  # Keras' V2 has no dropout at all
    return options


def _graph_output(source: KerasSource) -> str:
    if not source.has_configs:
        return "unknown (weights-only file)"
    tail = [source.weighted[-1], source.layers[-1]] if source.weighted else []
    if any(layer.config.get("activation") == "softmax" for layer in tail):
        return "probabilities (softmax)"
    return "logits"


def import_keras(
    source: Any,
    labels: str | os.PathLike[str] | None = None,
    resolution: int | None = None,
) -> MobileNet:
    """Read a Keras MobileNet (``.keras``/``.h5`` file or ``keras.Model``) into our model, in eval mode.

    The variant is recognised from the layers; the model carries the preprocessing Keras expects (inputs in
    [-1, 1]: ``mean = std = 0.5``), ``class_names`` from ``labels`` (one per line) and ``weights_info`` naming
    the source. ``resolution`` overrides the input size (weights-only ``.h5`` files have none; 224 then).
    """
    found = read_keras(source)
    recognised = recognise(found, resolution)
    options = _model_options(found, recognised.matcher)
    size = _resolution(found, resolution)
    prep, how = _preprocessing(found, size, recognised.num_classes)
    model = create_model(
        recognised.name, padding="tf_same", num_classes=recognised.num_classes, preprocessing=prep,
        **recognised.options, **options,
    )
    _load_state(model, recognised.matcher.state, found.label)
    model.class_names = labels_for_outputs(labels, recognised.num_classes, prep.labels_offset) if labels else None
    sha = f" (sha256 {found.sha256})" if found.sha256 else " (in memory)"
    model.weights_info = {
        "source": f"{found.label}{sha}",
        "license": LICENSE_NOTE,
        "extra": {
            "format": "keras" if found.graph is not None else "keras h5 weights",
            "model": recognised.name,
            "released_variant": recognised.name in RELEASED_MODELS,
            "graph_output": _graph_output(found),
            "preprocessing_from": how,
        },
    }
    return model.eval()
