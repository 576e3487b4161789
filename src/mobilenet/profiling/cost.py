"""The one cost counter: parameters and multiply-adds per layer, for every model.

Conventions (those of all three papers and of TF-slim's tables):
- a mult-add is one multiply-accumulate; convolutions and fully connected layers count, squeeze-excite's two
  1x1 layers included; BatchNorm, activations, pooling, residual adds and the SE multiply do not;
- parameters are PyTorch's ``sum(p.numel())`` (BatchNorm scale and shift and every bias included), unless a
  breakdown is asked for without them, as the V1 paper's Table 2 counts.

The counter runs one forward pass with hooks. Models built on the ``meta`` device cost nothing to count, so
even the 4.9 GMAC "Conv MobileNet" is counted instantly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum

import torch
from torch import nn

from mobilenet.models.builder import MobileNet, ModelConfig, config_of
from mobilenet.models.layers import SqueezeExcite
from mobilenet.models.registry import build_on_meta, config_from_name, model_name


class LayerType(str, Enum):
    CONV_1X1 = "1x1 conv"
    DEPTHWISE = "depthwise conv"
    FULL_CONV = "full conv"
    FULLY_CONNECTED = "fully connected"
    SQUEEZE_EXCITE = "squeeze-excite"
    BATCHNORM = "batchnorm"


@dataclass(frozen=True)
class LayerCost:
    name: str
    layer_type: LayerType
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    weight_params: int
    bias_params: int
    mult_adds: int

    @property
    def params(self) -> int:
        return self.weight_params + self.bias_params


@dataclass(frozen=True)
class TypeShare:
    layer_type: LayerType
    mult_adds: int
    params: int
    mult_adds_pct: float
    params_pct: float


@dataclass
class CostReport:
    """Per-layer costs and totals of one model at one input resolution (batch 1)."""

    model: str
    resolution: int
    layers: list[LayerCost]
    total_params: int
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def mult_adds(self) -> int:
        return sum(layer.mult_adds for layer in self.layers)

    @property
    def params(self) -> int:
        return self.total_params

    def breakdown(self, include_bias: bool = True, include_batchnorm: bool = True) -> list[TypeShare]:
        """Mult-adds and parameters by layer type, in percent of the totals under the same convention.

        ``include_bias=False, include_batchnorm=False`` is the V1 paper's Table 2 convention.
        """
        sums: dict[LayerType, list[int]] = {}
        for layer in self.layers:
            if layer.layer_type is LayerType.BATCHNORM and not include_batchnorm:
                continue
            params = layer.params if include_bias else layer.weight_params
            entry = sums.setdefault(layer.layer_type, [0, 0])
            entry[0] += layer.mult_adds
            entry[1] += params
        total_ma = sum(v[0] for v in sums.values()) or 1
        total_p = sum(v[1] for v in sums.values()) or 1
        return [
            TypeShare(kind, ma, p, 100.0 * ma / total_ma, 100.0 * p / total_p)
            for kind, (ma, p) in sorted(sums.items(), key=lambda item: -item[1][0])
        ]

    def to_dict(self, per_layer: bool = True) -> dict[str, object]:
        result: dict[str, object] = {
            "model": self.model,
            "resolution": self.resolution,
            "params": self.params,
            "mult_adds": self.mult_adds,
            "breakdown": [
                {**asdict(share), "layer_type": share.layer_type.value} for share in self.breakdown()
            ],
        }
        if per_layer:
            result["layers"] = [
                {**asdict(layer), "layer_type": layer.layer_type.value, "params": layer.params}
                for layer in self.layers
            ]
        return result


def _classify(module: nn.Module, in_squeeze_excite: bool) -> LayerType:
    if in_squeeze_excite:
        return LayerType.SQUEEZE_EXCITE
    if isinstance(module, nn.Linear):
        return LayerType.FULLY_CONNECTED
    if isinstance(module, nn.BatchNorm2d):
        return LayerType.BATCHNORM
    assert isinstance(module, nn.Conv2d)
    if module.groups > 1 and module.groups == module.in_channels:
        return LayerType.DEPTHWISE
    if module.kernel_size == (1, 1):
        return LayerType.CONV_1X1
    return LayerType.FULL_CONV


def _mult_adds(module: nn.Module, output: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        per_output = kh * kw * (module.in_channels // module.groups)
        return int(output[0].numel()) * per_output
    if isinstance(module, nn.Linear):
        return int(output[0].numel()) * module.in_features
    return 0


def count_cost(model: nn.Module, resolution: int, name: str = "", in_chans: int = 3) -> CostReport:
    """Count every conv, linear and BatchNorm layer of ``model`` on one ``resolution`` x ``resolution`` image."""
    se_members = {
        id(sub) for module in model.modules() if isinstance(module, SqueezeExcite) for sub in module.modules()
    }
    layers: list[LayerCost] = []
    handles = []

    def hook(layer_name: str):
        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            bias = getattr(module, "bias", None)
            weight = getattr(module, "weight", None)
            layers.append(
                LayerCost(
                    name=layer_name,
                    layer_type=_classify(module, id(module) in se_members),
                    input_shape=tuple(inputs[0].shape[1:]),
                    output_shape=tuple(output.shape[1:]),
                    weight_params=weight.numel() if weight is not None else 0,
                    bias_params=bias.numel() if bias is not None else 0,
                    mult_adds=_mult_adds(module, output),
                )
            )

        return record

    for layer_name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
            handles.append(module.register_forward_hook(hook(layer_name)))
    device = next(model.parameters()).device
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, in_chans, resolution, resolution, device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    total = sum(p.numel() for p in model.parameters())
    return CostReport(model=name, resolution=resolution, layers=layers, total_params=total)


def cost_of(name_or_config: str | ModelConfig, resolution: int | None = None, **overrides: object) -> CostReport:
    """Cost of a model by name (``cost_of("mobilenet_v1_0.5_160")``) or config, without allocating weights."""
    if isinstance(name_or_config, str):
        config = config_from_name(name_or_config, **overrides)
    else:
        config = name_or_config.replace(**overrides) if overrides else name_or_config
    if resolution is not None:
        config = config.replace(resolution=resolution)
    model = build_on_meta(config)
    name = model_name(config.arch, config.width_multiplier, config.resolution)
    report = count_cost(model, config.resolution, name=name, in_chans=config.in_chans)
    report.meta = {"num_classes": config.num_classes, "source": config.spec.source}
    return report


def cost_of_model(model: MobileNet, resolution: int | None = None) -> CostReport:
    config = config_of(model, "cost_of_model (cost_of takes a name)")
    resolution = config.resolution if resolution is None else resolution
    config.replace(resolution=resolution)  # validated like building at that size: one bound for both
    return count_cost(model, resolution, name=model_name(config.arch, config.width_multiplier, resolution))
