"""Export to ONNX with a dynamic batch, BatchNorm folded, labels and preprocessing in ``metadata_props``."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from mobilenet.errors import MobilenetError
from mobilenet.export.fold import fold_batchnorm
from mobilenet.export.metadata import export_metadata
from mobilenet.export.quant_friendly import make_quantization_friendly
from mobilenet.export.quiet import quiet_converter
from mobilenet.fileio import atomic_path

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def export_onnx(model: nn.Module, path: str | Path, *, quant_friendly: bool = False, batch_size: int = 1) -> Path:
    """Write ``model`` as ONNX (opset 18) to ``path`` atomically and return the path.

    ``quant_friendly`` rewrites V3's hard-swish and hard-sigmoid into ops with int8 kernels
    (:mod:`mobilenet.export.quant_friendly`): use it for a graph that is going to be quantized.
    """
    onnx = _require_onnx()
    deploy = fold_batchnorm(model)
    if quant_friendly:
        deploy = make_quantization_friendly(deploy)
    resolution = model.config.resolution
    sample = torch.randn(batch_size, model.config.in_chans, resolution, resolution)
    proto = _trace_to_onnx(deploy, sample).model_proto
    return _finish(onnx, proto, export_metadata(model, format="onnx", quant_friendly=quant_friendly), path)


def export_pt2e_onnx(quantized: nn.Module, model: nn.Module, path: str | Path, **facts: object) -> Path:
    """Write a PT2E-converted int8 graph (e.g. after quantization-aware training) as a QDQ ONNX file.

    The exporter quantizes the float weights at run time (QuantizeLinear, Clip, DequantizeLinear); those are
    folded into int8 initializers here, so onnxruntime fuses every conv into QLinearConv.
    """
    onnx = _require_onnx()
    resolution = model.config.resolution
    sample = torch.randn(1, model.config.in_chans, resolution, resolution)
    proto = _trace_to_onnx(quantized, sample).model_proto
    fold_weight_quantization(proto)
    return _finish(onnx, proto, export_metadata(model, format="onnx", int8=True, **facts), path)


def _finish(onnx, proto, metadata: dict[str, str], path: str | Path) -> Path:  # noqa: ANN001 - module, ModelProto
    replace_mean_with_global_pool(proto)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.checker.check_model(proto)
    target = Path(path)
    with atomic_path(target) as tmp:
        onnx.save(proto, str(tmp))
    return target


def fold_weight_quantization(proto) -> int:  # noqa: ANN001 - onnx.ModelProto
    """QuantizeLinear(+Clip) of a constant weight becomes the int8 initializer it computes; returns how many."""
    import numpy as np
    from onnx import numpy_helper

    graph = proto.graph
    initializers = {init.name: init for init in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    constants = dict(_constant_values(graph))

    def value(name: str):  # noqa: ANN202
        return numpy_helper.to_array(initializers[name]) if name in initializers else constants.get(name)

    dropped, folded = set(), 0
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] not in initializers:
            continue
        weight, scale, zero = (value(name) for name in node.input[:3])
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * weight.ndim
        shape[axis] = -1
        quantized = np.round(weight / scale.reshape(shape)) + zero.reshape(shape).astype(np.int32)
        output, follower = node.output[0], consumers.get(node.output[0], [])
        low, high = np.iinfo(zero.dtype).min, np.iinfo(zero.dtype).max
        if len(follower) == 1 and follower[0].op_type == "Clip":  # the quantizer's narrower range, e.g. -127
            low, high = value(follower[0].input[1]), value(follower[0].input[2])
            dropped.add(id(follower[0]))
            output = follower[0].output[0]
        graph.initializer.append(numpy_helper.from_array(np.clip(quantized, low, high).astype(zero.dtype), output))
        dropped.add(id(node))
        folded += 1
    kept = [node for node in graph.node if id(node) not in dropped]
    del graph.node[:]
    graph.node.extend(kept)
    used = {name for node in graph.node for name in node.input}
    unused = [init for init in graph.initializer if init.name not in used]
    for init in unused:
        graph.initializer.remove(init)
    return folded


def _constant_values(graph):  # noqa: ANN001, ANN202
    from onnx import numpy_helper

    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            yield node.output[0], numpy_helper.to_array(node.attribute[0].t)


def _trace_to_onnx(model: nn.Module, sample: torch.Tensor):  # noqa: ANN202 - torch.onnx.ONNXProgram
    batch = torch.export.Dim("batch", min=1, max=1024)
    with quiet_converter("torch.onnx", "onnxscript", "torch.export", "torch._dynamo"):
        return torch.onnx.export(
            model,
            (sample,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
            optimize=True,
            verbose=False,
        )



def replace_mean_with_global_pool(proto) -> int:  # noqa: ANN001 - onnx.ModelProto
    """Spatial means (squeeze-excite and the head's pooling) become GlobalAveragePool, which onnxruntime
    and OpenVINO run in int8; ReduceMean stays float in their quantized graphs. Returns how many changed."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    constants.update(_constant_values(graph))
    nodes, changed = [], 0
    for node in graph.node:
        axes = _mean_axes(node, constants)
        if axes is None or sorted(int(a) % 4 for a in axes) != [2, 3]:
            nodes.append(node)
            continue
        keepdims = next((a.i for a in node.attribute if a.name == "keepdims"), 1)
        pooled = node.output[0] if keepdims else node.output[0] + "__pooled"
        nodes.append(helper.make_node("GlobalAveragePool", [node.input[0]], [pooled], name=node.name + "__gap"))
        if not keepdims:
            shape_name = node.output[0] + "__flat_shape"
            graph.initializer.append(numpy_helper.from_array(_flat_shape(), shape_name))
            nodes.append(helper.make_node("Reshape", [pooled, shape_name], [node.output[0]], name=node.name + "__flat"))
        changed += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return changed


def _flat_shape():  # noqa: ANN202
    import numpy as np

    return np.array([0, -1], dtype=np.int64)


def _mean_axes(node, constants: dict) -> list[int] | None:  # noqa: ANN001
    if node.op_type != "ReduceMean":
        return None
    if len(node.input) > 1 and node.input[1] in constants:  # opset >= 18: axes is an input
        return [int(a) for a in constants[node.input[1]].reshape(-1)]
    attribute = next((a for a in node.attribute if a.name == "axes"), None)
    return list(attribute.ints) if attribute is not None else None


def _require_onnx():  # noqa: ANN202
    try:
        import onnx
        import onnxscript  # noqa: F401 - torch's ONNX exporter needs it
    except ImportError:
        raise MobilenetError("ONNX export needs onnx and onnxscript; pip install 'mobilenet[onnx]'") from None
    return onnx
