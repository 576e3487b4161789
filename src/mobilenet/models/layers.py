"""The building blocks of every MobileNet, each a small module with named parts.

Element-wise multiply and residual add are modules too (:class:`Multiply`, :class:`Add`), not inline
arithmetic, so that quantization tools can see and replace them (Keras' MobileNetV3 could not be
quantization-aware trained because its hard-sigmoid was raw tensor arithmetic).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mobilenet.models.specs import Activation

Padding = Literal["symmetric", "tf_same"]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never more than 10% below it.

    This is the channel rounding rule of the V2 and V3 papers' released code (TF-slim ``_make_divisible``).
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def make_activation(name: Activation) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "relu6":
        return nn.ReLU6()
    if name == "hswish":
        return nn.Hardswish()
    if name == "linear":
        return nn.Identity()
    raise ValueError(f"unknown activation {name!r}")


class SamePad2d(nn.Module):
    """Zero padding that reproduces TensorFlow's "SAME" for a strided conv.

    TF pads ``total = max((ceil(n / s) - 1) * s + k - n, 0)`` with the extra pixel at the bottom/right,
    while PyTorch pads ``k // 2`` on both sides. For stride 2 and an even input the two differ by one
    pixel of shift, which is enough to change the predictions of weights trained in TensorFlow.
    """

    def __init__(self, kernel: int, stride: int, dilation: int = 1) -> None:
        super().__init__()
        self.kernel = kernel
        self.stride = stride
        self.dilation = dilation

    def _pad(self, size: int) -> tuple[int, int]:
        out = -(-size // self.stride)
        total = max((out - 1) * self.stride + (self.kernel - 1) * self.dilation + 1 - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = self._pad(x.shape[-2])
        left, right = self._pad(x.shape[-1])
        return F.pad(x, (left, right, top, bottom))

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}"


class ConvBnAct(nn.Module):
    """Conv, BatchNorm, activation: the unit every row of every MobileNet table is made of."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int = 3,
        stride: int = 1,
        groups: int = 1,
        activation: Activation = "relu",
        padding: Padding = "symmetric",
        bn_eps: float = 1e-3,
        bn_momentum: float = 0.01,
    ) -> None:
        super().__init__()
        asymmetric = padding == "tf_same" and stride > 1
        self.pad: nn.Module = SamePad2d(kernel, stride) if asymmetric else nn.Identity()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel,
            stride=stride,
            padding=0 if asymmetric else kernel // 2,
            groups=groups,
            bias=False,  # BatchNorm's shift makes a conv bias redundant
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum)
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(self.pad(x))))


class Multiply(nn.Module):
    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return x * scale


class Add(nn.Module):
    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return x + residual


class SqueezeExcite(nn.Module):
    """Squeeze-and-excite as in MobileNetV3 Sec. 5.3: a bottleneck of 1/4 of the expanded width, ReLU inside
    and a hard-sigmoid gate."""

    def __init__(self, channels: int, squeeze_channels: int, gate: Literal["hsigmoid", "sigmoid"]) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, squeeze_channels, 1)
        self.act = nn.ReLU()
        self.expand = nn.Conv2d(squeeze_channels, channels, 1)
        self.gate = nn.Hardsigmoid() if gate == "hsigmoid" else nn.Sigmoid()
        self.scale = Multiply()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.gate(self.expand(self.act(self.reduce(self.pool(x)))))
        return self.scale(x, weights)


class DepthwiseSeparable(nn.Module):
    """MobileNetV1's factorised conv (Fig. 3): a 3x3 depthwise conv, then a 1x1 pointwise conv."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int = 3,
        stride: int = 1,
        activation: Activation = "relu",
        **conv_options: object,
    ) -> None:
        super().__init__()
        self.depthwise = ConvBnAct(
            in_channels, in_channels, kernel, stride, groups=in_channels, activation=activation, **conv_options
        )
        self.pointwise = ConvBnAct(in_channels, out_channels, 1, activation=activation, **conv_options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class InvertedResidual(nn.Module):
    """The V2/V3 bottleneck (V2 Table 1): expand 1x1, depthwise, optional SE, then a *linear* 1x1 projection.

    The residual connects only when stride is 1 and the width is unchanged. The expansion conv is absent
    when the expanded width equals the input width (the first bottleneck of V2 and V3).
    """

    def __init__(
        self,
        in_channels: int,
        expanded_channels: int,
        out_channels: int,
        kernel: int,
        stride: int,
        activation: Activation,
        se_channels: int | None = None,
        se_gate: Literal["hsigmoid", "sigmoid"] = "hsigmoid",
        **conv_options: object,
    ) -> None:
        super().__init__()
        self.expand: nn.Module = (
            ConvBnAct(in_channels, expanded_channels, 1, activation=activation, **conv_options)
            if expanded_channels != in_channels
            else nn.Identity()
        )
        self.depthwise = ConvBnAct(
            expanded_channels,
            expanded_channels,
            kernel,
            stride,
            groups=expanded_channels,
            activation=activation,
            **conv_options,
        )
        self.se: nn.Module = (
            SqueezeExcite(expanded_channels, se_channels, se_gate) if se_channels else nn.Identity()
        )
        self.project = ConvBnAct(expanded_channels, out_channels, 1, activation="linear", **conv_options)
        self.use_residual = stride == 1 and in_channels == out_channels
        self.add: nn.Module = Add() if self.use_residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.depthwise(self.expand(x))))
        if self.use_residual:
            return self.add(out, x)
        return out
