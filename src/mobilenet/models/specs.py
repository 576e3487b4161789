"""Architectures as data: each MobileNet is a table whose rows mirror the paper's table.

One builder (:mod:`mobilenet.models.builder`) turns any :class:`ArchSpec` into a network, so a new variant is a
new table, not new code. Channel counts in the tables are the paper's (width multiplier 1.0); the
:class:`WidthRule` of each family says how a width multiplier scales them, because the three papers (and the
released checkpoints) round channels differently.

Sources:
- V1: Howard et al. 2017, "MobileNets", arXiv:1704.04861, Table 1 (and Tables 4 and 5 for the baselines).
- V2: Sandler et al. 2018, "MobileNetV2", arXiv:1801.04381, Table 2.
- V3: Howard et al. 2019, "Searching for MobileNetV3", arXiv:1905.02244, Tables 1 and 2, as the released
  TF-slim implementation builds them (``mobilenet_v3.py``: V3_LARGE, V3_SMALL and their MINIMALISTIC forms).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import Literal

Activation = Literal["relu", "relu6", "hswish", "linear"]


class LayerKind(str, Enum):
    """Operators that appear in the papers' tables."""

    CONV = "conv"  # full KxK conv + BN + activation ("conv2d" / "Conv")
    DEPTHWISE_SEPARABLE = "dws"  # V1: "Conv dw" followed by "Conv 1x1"
    BOTTLENECK = "bneck"  # V2/V3: inverted residual (expand 1x1, depthwise, SE, linear project)


class WidthRule(str, Enum):
    """How a width multiplier turns a table's channel count into a real one."""

    TRUNCATE = "truncate"  # V1 paper and TF-slim: int(c * alpha)
    DIVISIBLE_BY_8 = "divisible_by_8"  # V2/V3: nearest multiple of 8, never below 90% of c * alpha


@dataclass(frozen=True)
class LayerSpec:
    """One row of a paper's architecture table.

    ``repeats`` rows with the same operator are written once, as the papers do (V2's ``n`` column, V1's
    "5x"); only the first repeat uses ``stride``. ``expansion`` is V2's ``t`` (a ratio of the input width);
    ``expanded`` is V3's absolute "exp size" column; exactly one of them is set for a bottleneck.
    """

    kind: LayerKind
    out_channels: int
    kernel: int = 3
    stride: int = 1
    repeats: int = 1
    activation: Activation = "relu"
    expansion: float | None = None
    expanded: int | None = None
    squeeze_excite: bool = False
    narrows: bool = True  # False: alpha < 1 keeps the paper's width (V2's last 1x1 conv); alpha > 1 widens it


@dataclass(frozen=True)
class HeadSpec:
    """What follows the last table row: pooling, an optional no-BN 1x1 "pre-logits" layer, the classifier."""

    pre_logits: int | None = None  # V3's 1280 / 1024 conv without BN, after pooling
    pre_logits_activation: Activation = "hswish"
    dropout: float = 0.2


@dataclass(frozen=True)
class ArchSpec:
    """A whole network: its table rows, head, and the rules the family uses."""

    family: str
    layers: tuple[LayerSpec, ...]
    head: HeadSpec
    width_rule: WidthRule
    source: str
    se_gate: Literal["hsigmoid", "sigmoid"] = "hsigmoid"
    se_reduction: int = 4
    # V3 and TF-slim keep the head width for alpha < 1 and widen it for alpha > 1.
    head_scales_down: bool = False


def _dws(out: int, stride: int = 1, repeats: int = 1) -> LayerSpec:
    return LayerSpec(LayerKind.DEPTHWISE_SEPARABLE, out, stride=stride, repeats=repeats, activation="relu6")


# MobileNetV1, Howard et al. 2017, Table 1 "MobileNet Body Architecture". Each "Conv dw / Conv 1x1" pair of
# the table is one depthwise-separable row. The paper prints the second-to-last depthwise conv as "s2" with a
# 7x7 input and output; that is a typo: it is stride 1 in every release (TF-slim _CONV_DEFS, Keras).
# The paper says "BatchNorm and ReLU"; every released checkpoint (TF-slim, Keras, the Coral TFLite files) was
# trained with ReLU6, which also bounds activations for 8-bit inference, so the table uses ReLU6.
MOBILENET_V1 = ArchSpec(
    family="mobilenet_v1",
    source="Howard et al. 2017, arXiv:1704.04861, Table 1",
    width_rule=WidthRule.TRUNCATE,
    head=HeadSpec(dropout=0.001),  # Keras' default; TF-slim's dropout_keep_prob=0.999
    layers=(
        LayerSpec(LayerKind.CONV, 32, kernel=3, stride=2, activation="relu6"),  # Conv / s2, 3x3x3x32, 224x224x3
        _dws(64),  # Conv dw / s1 + Conv 1x1x32x64, 112x112
        _dws(128, stride=2),  # 112x112 -> 56x56
        _dws(128),
        _dws(256, stride=2),  # 56x56 -> 28x28
        _dws(256),
        _dws(512, stride=2),  # 28x28 -> 14x14
        _dws(512, repeats=5),  # "5x" at 14x14x512
        _dws(1024, stride=2),  # 14x14 -> 7x7
        _dws(1024, stride=1),  # printed "s2" in the paper: a typo, see above
    ),
)


def v1_full_conv(spec: ArchSpec = MOBILENET_V1) -> ArchSpec:
    """Table 4's "Conv MobileNet": every depthwise-separable layer replaced by a full 3x3 conv."""
    layers = tuple(
        replace(row, kind=LayerKind.CONV) if row.kind is LayerKind.DEPTHWISE_SEPARABLE else row
        for row in spec.layers
    )
    return replace(spec, family="mobilenet_v1_conv", layers=layers, source=spec.source + " and Table 4")


def v1_shallow(spec: ArchSpec = MOBILENET_V1) -> ArchSpec:
    """Table 5's "Shallow MobileNet": the five separable layers at 14x14x512 removed (Section 4.1)."""
    layers = tuple(row for row in spec.layers if not (row.out_channels == 512 and row.repeats == 5))
    return replace(spec, family="mobilenet_v1_shallow", layers=layers, source=spec.source + " and Table 5")


def _v2_bottleneck(t: int, c: int, n: int, s: int) -> LayerSpec:
    return LayerSpec(LayerKind.BOTTLENECK, c, kernel=3, stride=s, repeats=n, activation="relu6", expansion=t)


# MobileNetV2, Sandler et al. 2018, Table 2 (columns t, c, n, s).
MOBILENET_V2 = ArchSpec(
    family="mobilenet_v2",
    source="Sandler et al. 2018, arXiv:1801.04381, Table 2",
    width_rule=WidthRule.DIVISIBLE_BY_8,
    head=HeadSpec(dropout=0.2),
    layers=(
        LayerSpec(LayerKind.CONV, 32, kernel=3, stride=2, activation="relu6"),  # 224^2 x 3, conv2d
        _v2_bottleneck(1, 16, 1, 1),  # 112^2 x 32
        _v2_bottleneck(6, 24, 2, 2),  # 112^2 x 16
        _v2_bottleneck(6, 32, 3, 2),  # 56^2 x 24
        _v2_bottleneck(6, 64, 4, 2),  # 28^2 x 32
        _v2_bottleneck(6, 96, 3, 1),  # 14^2 x 64
        _v2_bottleneck(6, 160, 3, 2),  # 14^2 x 96
        _v2_bottleneck(6, 320, 1, 1),  # 7^2 x 160
        # 7^2 x 320, conv2d 1x1. Sec. 4: "we apply width multiplier to all layers except the very last
        # convolutional layer" for multipliers below one; above one it widens with the rest.
        LayerSpec(LayerKind.CONV, 1280, kernel=1, activation="relu6", narrows=False),
    ),
)


def _v3(k: int, exp: int, out: int, se: bool, nl: Activation, s: int) -> LayerSpec:
    return LayerSpec(
        LayerKind.BOTTLENECK, out, kernel=k, stride=s, activation=nl, expanded=exp, squeeze_excite=se
    )


# MobileNetV3-Large, Howard et al. 2019, Table 1 (columns: kernel, exp size, #out, SE, NL, s).
MOBILENET_V3_LARGE = ArchSpec(
    family="mobilenet_v3_large",
    source="Howard et al. 2019, arXiv:1905.02244, Table 1",
    width_rule=WidthRule.DIVISIBLE_BY_8,
    head=HeadSpec(pre_logits=1280, dropout=0.2),  # "conv2d 1x1, NBN" 1280, then the k-way conv
    head_scales_down=False,
    layers=(
        LayerSpec(LayerKind.CONV, 16, kernel=3, stride=2, activation="hswish"),  # 224^2 x 3
        _v3(3, 16, 16, False, "relu", 1),  # 112^2 x 16
        _v3(3, 64, 24, False, "relu", 2),
        _v3(3, 72, 24, False, "relu", 1),  # 56^2 x 24
        _v3(5, 72, 40, True, "relu", 2),
        _v3(5, 120, 40, True, "relu", 1),  # 28^2 x 40
        _v3(5, 120, 40, True, "relu", 1),
        _v3(3, 240, 80, False, "hswish", 2),
        _v3(3, 200, 80, False, "hswish", 1),  # 14^2 x 80
        _v3(3, 184, 80, False, "hswish", 1),
        _v3(3, 184, 80, False, "hswish", 1),
        _v3(3, 480, 112, True, "hswish", 1),
        _v3(3, 672, 112, True, "hswish", 1),  # 14^2 x 112
        _v3(5, 672, 160, True, "hswish", 2),
        _v3(5, 960, 160, True, "hswish", 1),  # 7^2 x 160
        _v3(5, 960, 160, True, "hswish", 1),
        LayerSpec(LayerKind.CONV, 960, kernel=1, activation="hswish"),  # 7^2 x 160, conv2d 1x1
    ),
)

# MobileNetV3-Small, Howard et al. 2019, Table 2, as released: the head ("conv2d 1x1, NBN") is 1024 wide in
# TF-slim, Keras, torchvision and timm (the extracted paper text shows 1280), and the final 576-wide conv has
# no squeeze-excite in any release although the table marks one.
MOBILENET_V3_SMALL = ArchSpec(
    family="mobilenet_v3_small",
    source="Howard et al. 2019, arXiv:1905.02244, Table 2 (as released: 1024 head, no SE on the last conv)",
    width_rule=WidthRule.DIVISIBLE_BY_8,
    head=HeadSpec(pre_logits=1024, dropout=0.2),
    head_scales_down=False,
    layers=(
        LayerSpec(LayerKind.CONV, 16, kernel=3, stride=2, activation="hswish"),  # 224^2 x 3
        _v3(3, 16, 16, True, "relu", 2),  # 112^2 x 16
        _v3(3, 72, 24, False, "relu", 2),  # 56^2 x 16
        _v3(3, 88, 24, False, "relu", 1),  # 28^2 x 24
        _v3(5, 96, 40, True, "hswish", 2),
        _v3(5, 240, 40, True, "hswish", 1),  # 14^2 x 40
        _v3(5, 240, 40, True, "hswish", 1),
        _v3(5, 120, 48, True, "hswish", 1),
        _v3(5, 144, 48, True, "hswish", 1),  # 14^2 x 48
        _v3(5, 288, 96, True, "hswish", 2),
        _v3(5, 576, 96, True, "hswish", 1),  # 7^2 x 96
        _v3(5, 576, 96, True, "hswish", 1),
        LayerSpec(LayerKind.CONV, 576, kernel=1, activation="hswish"),  # 7^2 x 96; released without SE
    ),
)


def minimalistic(spec: ArchSpec) -> ArchSpec:
    """TF-slim's "minimalistic" V3: no squeeze-excite, no hard-swish (ReLU), 3x3 kernels only.

    Made for accelerators that lack those ops (Edge TPU, some DSPs); same layer widths otherwise.
    """
    layers = tuple(
        replace(
            row,
            kernel=min(row.kernel, 3),
            squeeze_excite=False,
            activation="relu" if row.activation == "hswish" else row.activation,
        )
        for row in spec.layers
    )
    head = replace(spec.head, pre_logits_activation="relu")
    return replace(
        spec, family=spec.family + "_minimalistic", layers=layers, head=head, source=spec.source + ", minimalistic"
    )


ARCHITECTURES: dict[str, ArchSpec] = {
    spec.family: spec
    for spec in (
        MOBILENET_V1,
        v1_full_conv(),
        v1_shallow(),
        MOBILENET_V2,
        MOBILENET_V3_LARGE,
        MOBILENET_V3_SMALL,
        minimalistic(MOBILENET_V3_LARGE),
        minimalistic(MOBILENET_V3_SMALL),
    )
}
