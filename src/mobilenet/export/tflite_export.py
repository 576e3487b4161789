"""Export to TFLite through litert-torch (the converter formerly called ai-edge-torch), fp32 or int8.

int8 is static post-training quantization through PyTorch's PT2E flow with litert-torch's quantizer:
per-channel symmetric int8 weights, int8 activations calibrated on real images. V3 is first rewritten
into int8-friendly ops (``quant_friendly``, with TFLite's gate form): XNNPACK does not run TFLite's int8
HARD_SWISH kernel. The input stays NCHW, as in PyTorch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobilenet.errors import MobilenetError
from mobilenet.export.fold import fold_batchnorm
from mobilenet.export.quant_friendly import make_quantization_friendly
from mobilenet.export.quiet import quiet_converter
from mobilenet.fileio import atomic_path


def export_tflite(
    model: nn.Module,
    path: str | Path,
    *,
    int8: bool = False,
    calibration: np.ndarray | None = None,
    batch_size: int = 1,
) -> Path:
    """Convert ``model`` to a ``.tflite`` file at ``path`` (atomically) and return the path."""
    with quiet_converter():  # importing it starts absl, oneDNN and torchao, each with a banner on stderr
        _require_litert_torch()  # fail before any work when the converter is missing
    resolution = model.config.resolution
    sample = (torch.randn(batch_size, model.config.in_chans, resolution, resolution),)
    deploy = fold_batchnorm(model)
    with quiet_converter():
        if int8:
            if calibration is None or len(calibration) == 0:
                raise MobilenetError("int8 TFLite needs calibration images; pass --calibration FOLDER")
            deploy, quantizer = _quantize_pt2e(int8_ready(deploy), sample, calibration)
            return write_tflite(deploy, path, sample, quantizer)
        return write_tflite(deploy, path, sample)


def write_tflite(
    graph: nn.Module, path: str | Path, sample: tuple[torch.Tensor, ...], quantizer: object | None = None
) -> Path:
    """Convert a float module, or a PT2E-converted int8 graph with its ``quantizer``, to ``path`` atomically."""
    litert_torch = _require_litert_torch()
    with quiet_converter():
        if quantizer is None:
            converted = litert_torch.convert(graph, sample)
        else:
            from litert_torch.quantize.quant_config import QuantConfig

            converted = litert_torch.convert(graph, sample, quant_config=QuantConfig(pt2e_quantizer=quantizer))
        target = Path(path)
        with atomic_path(target) as tmp:
            converted.export(str(tmp))
    return target


def int8_ready(folded: nn.Module) -> nn.Module:
    """The BN-folded model in the form TFLite's int8 kernels want (in place): hard-swish and the squeeze-excite
    gates rewritten. TFLite has an int8 HARD_SWISH kernel, but XNNPACK does not take it: each one split the
    graph, and V3-Large int8 ran 7.4 ms against 3.8 ms fp32; rewritten, 2.0 ms."""
    return _break_uniform_biases(make_quantization_friendly(folded, gate_form="relu6"))


def tflite_int8_quantizer(qat: bool = False, uint8_activations: bool = False):  # noqa: ANN201 - a PT2EQuantizer
    """litert-torch's PT2E quantizer (per-channel symmetric int8 weights) with the fixes described below.

    ``uint8_activations`` is for graphs bound for onnxruntime, whose x86 kernels fuse every conv of a uint8
    activation graph; with TFLite's int8 activations it left a third of the convs in float.
    """
    import dataclasses

    from litert_torch.quantize import pt2e_quantizer

    config = pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_qat=qat)
    if uint8_activations:
        activation = dataclasses.replace(config.input_activation, dtype=torch.uint8, quant_min=0, quant_max=255)
        config = dataclasses.replace(config, input_activation=activation, output_activation=activation)
    return _conv_relu6_quantizer_class(pt2e_quantizer.PT2EQuantizer)().set_global(config)


def _break_uniform_biases(model: nn.Module) -> nn.Module:
    """Work around a converter bug: a conv bias whose values are all equal and non-zero (an untrained
    squeeze-excite gate after the rewrite: every value 3.0) is stored as one int32 value quantized with the
    first channel's scale, so every other channel read a wrong bias (3.0 became 4.2, 4.7, 6.9...). Moving
    one value by a float32 ulp (2e-7, far below the int32 bias step of about 1e-5) keeps the tensor from
    being stored as a single value."""
    with torch.no_grad():
        for module in model.modules():
            bias = getattr(module, "bias", None)
            if isinstance(module, nn.Conv2d) and bias is not None and bias.numel() > 1:
                if bool((bias == bias[0]).all()) and float(bias[0]) != 0.0:
                    bias[0] = torch.nextafter(bias[0], bias[0] * 2)
    return model


def _quantize_pt2e(model: nn.Module, sample: tuple[torch.Tensor], calibration: np.ndarray):  # noqa: ANN202
    from torchao.quantization.pt2e import quantize_pt2e

    quantizer = tflite_int8_quantizer()
    graph = torch.export.export(model, sample).module()
    prepared = quantize_pt2e.prepare_pt2e(graph, quantizer)
    batch = sample[0].shape[0]
    with torch.no_grad():
        for start in range(0, len(calibration) - batch + 1, batch):
            prepared(torch.from_numpy(np.ascontiguousarray(calibration[start : start + batch], dtype=np.float32)))
    quantized = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
    return quantized, quantizer


_CONVS = ("conv1d", "conv2d", "convolution")
_RELU6 = ("hardtanh", "hardtanh_")


def _is_call(node: object, names: tuple[str, ...]) -> bool:
    """Whether ``node`` calls one of the aten ops ``names`` (any overload)."""
    if not isinstance(node, torch.fx.Node) or node.op != "call_function":
        return False
    return getattr(node.target, "__name__", "").split(".")[0] in names


def _conv_relu6_quantizer_class(base: type) -> type:
    """litert-torch's quantizer with two gaps filled (both found on the official V2) and QAT-only BN patterns off.

    It fuses conv+ReLU but not conv+ReLU6 (``hardtanh``): ReLU6 shared the conv's observer, so every V1/V2
    activation was quantized over the pre-clip range (e.g. [-40, 30]) instead of [0, 6], and the official V2
    agreed with fp32 on only 74% of photos (96% after the fix). Its add annotator treats a chain of residual
    adds as one partition and annotates only the last, so the others ran in float between DEQUANTIZE and
    QUANTIZE ops. Both patterns are annotated here first; the base quantizer skips annotated nodes."""

    class ConvRelu6Quantizer(base):
        # BatchNorm is folded before quantization, so the QAT-only conv+BN patterns never match; their
        # annotators also fail on this torch (they pass a function to torch.export).
        STATIC_QAT_ONLY_OPS: list[str] = []

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            if self.global_config is not None and self.global_config.input_activation is not None:
                _annotate_conv_relu6(model, self.global_config)
                _annotate_adds(model, self.global_config)
            return super().annotate(model)

    return ConvRelu6Quantizer


def _annotate_adds(graph: torch.fx.GraphModule, config) -> None:  # noqa: ANN001
    from litert_torch.quantize import pt2e_quantizer_utils as utils
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    for node in graph.graph.nodes:
        inputs = node.args[:2]
        if not _is_call(node, ("add",)) or not all(isinstance(arg, torch.fx.Node) for arg in inputs):
            continue
        if utils._is_annotated([node]):
            continue
        node.meta["quantization_annotation"] = QuantizationAnnotation(
            input_qspec_map={arg: utils.get_input_act_qspec(config) for arg in inputs},
            output_qspec=utils.get_output_act_qspec(config),
            _annotated=True,
        )


def _annotate_conv_relu6(graph: torch.fx.GraphModule, config) -> None:  # noqa: ANN001
    from litert_torch.quantize import pt2e_quantizer_utils as utils
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    for node in graph.graph.nodes:
        if not (_is_call(node, _RELU6) and _is_call(node.args[0], _CONVS)) or len(node.args[0].users) != 1:
            continue
        conv = node.args[0]
        inputs = {conv.args[0]: utils.get_input_act_qspec(config), conv.args[1]: utils.get_weight_qspec(config)}
        partition = [node, conv, conv.args[1]]
        bias = conv.args[2] if len(conv.args) > 2 else None
        if isinstance(bias, torch.fx.Node):
            inputs[bias] = utils.get_bias_qspec(config)
            partition.append(bias)
        if utils._is_annotated(partition):
            continue
        conv.meta["quantization_annotation"] = QuantizationAnnotation(input_qspec_map=inputs, _annotated=True)
        node.meta["quantization_annotation"] = QuantizationAnnotation(
            output_qspec=utils.get_output_act_qspec(config), _annotated=True
        )
        utils._mark_nodes_as_annotated(partition)


def _require_litert_torch():  # noqa: ANN202
    try:
        import litert_torch
    except ImportError:
        raise MobilenetError(
            "TFLite export needs litert-torch (about 1.2 GB with jax): install torch==2.13.0 first, then "
            "pip install 'mobilenet[litert]'"
        ) from None
    return litert_torch
