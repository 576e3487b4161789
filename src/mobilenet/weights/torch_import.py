"""Convert torchvision's and timm's MobileNet state dicts into our model, key by key and shape by shape.

Neither library is needed: a state dict is a mapping of names to tensors, and the names follow each library's
module structure. The conversion walks our model's layers in order and names, for each tensor, the key the source
library gives the same tensor; every key of the source must be used and every tensor of ours filled, with equal
shapes, or the conversion stops with an error that names the first key that does not fit.

Source layouts (``model.state_dict()`` of):

- torchvision ``mobilenet_v2``: ``features.{i}`` as in ours (stem, 17 blocks, last 1x1 conv), each conv+BN pair
  a ``Conv2dNormActivation`` (``.0`` conv, ``.1`` BN); a block is ``features.{i}.conv`` = [expand], depthwise,
  project conv, project BN; the head is ``classifier.1`` (after a dropout). BatchNorm eps 1e-5.
- torchvision ``mobilenet_v3_large``/``_small``: blocks are ``features.{i}.block`` = [expand], depthwise, [SE with
  ``fc1``/``fc2``], project; the head is ``classifier.0`` (1280/1024, our ``pre_logits``) and ``classifier.3``.
  BatchNorm eps 1e-3.
- timm (``mobilenetv1_*``, ``mobilenetv2_*``, ``mobilenetv3_*``, ``tf_mobilenetv3_*``): ``conv_stem``/``bn1``,
  then ``blocks.{stage}.{block}`` (depthwise-separable: ``conv_dw``/``bn1``/[``se``]/``conv_pw``/``bn2``; inverted
  residual: ``conv_pw``/``bn1``/``conv_dw``/``bn2``/[``se``]/``conv_pwl``/``bn3``; V3's last 1x1 conv:
  ``conv``/``bn1``; SE: ``conv_reduce``/``conv_expand``), then V2's ``conv_head``/``bn2``, V3's no-BN 1x1
  ``conv_head`` with bias (our ``pre_logits``), and ``classifier``. V1 has no head conv. BatchNorm eps 1e-5
  (1e-3 and TF SAME padding for the ``tf_`` ports of Google's weights).

What cannot load exactly is refused rather than loaded wrong: torchvision's V3 below width 1.0 (it narrows the
1280/1024 head, which TF-slim, Keras, timm and we keep), timm's V1 at widths where its multiple-of-8 rounding
differs from V1's truncation ``int(c * alpha)`` (e.g. 0.35; equal at 0.25, 0.5, 0.75, 1.0, 1.25), and timm variants
with more blocks (``mobilenetv2_110d``/``120d``) or an extra head conv (``mobilenetv1_100h``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mobilenet.checks import is_number
from mobilenet.errors import MobilenetError
from mobilenet.models.builder import MobileNet, ModelConfig, WidthScaler
from mobilenet.models.layers import ConvBnAct, DepthwiseSeparable, InvertedResidual, Padding, SqueezeExcite
from mobilenet.models.preprocessing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INCEPTION_MEAN,
    INCEPTION_STD,
    Interpolation,
    Preprocessing,
)
from mobilenet.models.registry import build_on_meta, model_name
from mobilenet.models.specs import ARCHITECTURES, WidthRule

LAYOUTS = ("torchvision", "timm")
LICENSES = {
    "torchvision": "torchvision's weights: BSD-3-Clause (torchvision); check the model's documentation for its terms",
    "timm": "timm's weights: Apache-2.0 per the model card on the Hugging Face hub; check the card for its terms",
}
_BN_TENSORS = ("weight", "bias", "running_mean", "running_var")
_OPTIONAL = "num_batches_tracked"  # absent from checkpoints saved before PyTorch 0.4.1


@dataclass(frozen=True)
class SourceArch:
    """A source library's model, and the options that make ours compute the same function."""

    layout: str
    name: str  # the source library's name: mobilenet_v2, mobilenetv3_large_100, ...
    arch: str  # ours: mobilenet_v2, mobilenet_v3_large, ...
    alpha: float
    bn_eps: float
    padding: Padding
    preprocessing: Preprocessing
    stem_channels: int | None = None  # timm's V3 below 0.75 keeps its 16-channel stem

    def config(self, num_classes: int = 1000) -> ModelConfig:
        from mobilenet.models.registry import config_from_name

        return config_from_name(
            model_name(self.arch, self.alpha, self.preprocessing.resolution),
            num_classes=num_classes,
            bn_eps=self.bn_eps,
            padding=self.padding,
            preprocessing=self.preprocessing,
            stem_channels=self.stem_channels,
        )


# ----------------------------------------------------------------------------------------------------------
# The source architectures
# ----------------------------------------------------------------------------------------------------------

_TORCHVISION = {
    # name: (our arch, BatchNorm eps); torchvision's V2 uses nn.BatchNorm2d's default, its V3 TF's 1e-3
    "mobilenet_v2": ("mobilenet_v2", 1e-5),
    "mobilenet_v3_large": ("mobilenet_v3_large", 1e-3),
    "mobilenet_v3_small": ("mobilenet_v3_small", 1e-3),
}
_TIMM = re.compile(
    r"^(?P<tf>tf_)?(?:mobilenetv1_(?P<v1>\d{3})|mobilenetv2_(?P<v2>\d{3})|"
    r"mobilenetv3_(?P<size>large|small)(?P<minimal>_minimal)?_(?P<v3>\d{3}))$"
)


def _preprocessing(mean: tuple[float, ...], std: tuple[float, ...], interpolation: Interpolation) -> Preprocessing:
    return Preprocessing(resolution=224, mean=mean, std=std, crop_pct=0.875, interpolation=interpolation)


def torchvision_arch(name: str, width_mult: float = 1.0) -> SourceArch:
    """torchvision's builder name (and ``width_mult``) as our architecture; its ImageNet transforms resize the
    shorter side to 256 bilinearly and center-crop 224 (crop_pct 0.875), then ImageNet mean/std."""
    if name not in _TORCHVISION:
        raise MobilenetError(f"unknown torchvision MobileNet {name!r}; known: {', '.join(_TORCHVISION)}")
    arch, eps = _TORCHVISION[name]
    if not is_number(width_mult) or width_mult <= 0:
        raise MobilenetError(f"--width-mult must be a number > 0 (torchvision's width_mult), got {width_mult!r}")
    if arch.startswith("mobilenet_v3") and width_mult < 1.0:
        spec = ARCHITECTURES[arch]
        head = spec.head.pre_logits or 0
        raise MobilenetError(
            f"torchvision's {name} narrows its {head}-wide head to {WidthScaler(spec, width_mult)(head)} at "
            f"width_mult {width_mult}; ours keeps {head} for widths below 1 (as TF-slim, Keras and timm do), so these "
            "weights cannot load exactly"
        )
    return SourceArch(
        "torchvision", name, arch, width_mult, eps, "symmetric", _preprocessing(IMAGENET_MEAN, IMAGENET_STD, "bilinear")
    )


def timm_arch(name: str) -> SourceArch:
    """timm's model name as our architecture, with the preprocessing of its ImageNet weights (``pretrained_cfg``).

    timm's own MobileNets take ImageNet mean/std (V1: [-1, 1]), bicubic resizing and crop_pct 0.875; the ``tf_``
    ports of Google's V3 weights take [-1, 1] with bilinear resizing, TF SAME padding and BatchNorm eps 1e-3.
    """
    match = _TIMM.match(name) if isinstance(name, str) else None
    if match is None:
        raise MobilenetError(
            f"unknown or unsupported timm MobileNet {name!r}; supported: mobilenetv1_XXX, mobilenetv2_XXX, "
            "(tf_)mobilenetv3_large/small(_minimal)_XXX with XXX the width x100 (e.g. mobilenetv3_large_100); "
            "the 110d/120d (deeper) and 100h (extra head conv) variants have other layouts"
        )
    digits = match["v1"] or match["v2"] or match["v3"]
    alpha = int(digits) / 100
    stem_channels = None
    if match["v1"]:
        arch = "mobilenet_v1"
        _check_timm_v1_rounding(name, alpha)
    elif match["v2"]:
        arch = "mobilenet_v2"
    else:
        arch = f"mobilenet_v3_{match['size']}" + ("_minimalistic" if match["minimal"] else "")
        if alpha < 0.75:  # timm fixes V3's stem at 16 channels below 0.75; ours scales it unless told
            stem_channels = 16
    if match["tf"]:
        if not match["v3"]:
            raise MobilenetError(f"unknown timm model {name!r}: timm's tf_ MobileNet ports are V3 only")
        prep = _preprocessing(INCEPTION_MEAN, INCEPTION_STD, "bilinear")
        return SourceArch("timm", name, arch, alpha, 1e-3, "tf_same", prep, stem_channels)
    mean, std = (INCEPTION_MEAN, INCEPTION_STD) if match["v1"] else (IMAGENET_MEAN, IMAGENET_STD)
    prep = _preprocessing(mean, std, "bicubic")
    return SourceArch("timm", name, arch, alpha, 1e-5, "symmetric", prep, stem_channels)


def _check_timm_v1_rounding(name: str, alpha: float) -> None:
    """timm rounds V1's widths to multiples of 8; V1 (TF-slim, Keras, ours) truncates int(c * alpha)."""
    spec = ARCHITECTURES["mobilenet_v1"]
    assert spec.width_rule is WidthRule.TRUNCATE
    ours = WidthScaler(spec, alpha)
    for row in spec.layers:
        timm_width = _make_divisible(row.out_channels * alpha)
        if timm_width != ours(row.out_channels):
            raise MobilenetError(
                f"timm's {name} rounds the {row.out_channels}-wide layer to {timm_width} channels, V1's rule "
                f"int(c * alpha) gives {ours(row.out_channels)}; its weights cannot load into our V1"
            )


def _make_divisible(value: float, divisor: int = 8) -> int:
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def source_arch(layout: str, name: str) -> SourceArch:
    if layout == "torchvision":
        return torchvision_arch(name)
    if layout == "timm":
        return timm_arch(name)
    raise MobilenetError(f"unknown state dict layout {layout!r}; use one of: {', '.join(LAYOUTS)}")


# ----------------------------------------------------------------------------------------------------------
# Key mapping: (source key, our key) for every tensor of our model
# ----------------------------------------------------------------------------------------------------------


def _bn(source: str, ours: str) -> list[tuple[str, str]]:
    return [(f"{source}.{t}", f"{ours}.{t}") for t in (*_BN_TENSORS, _OPTIONAL)]


def _conv_bn(conv: str, bn: str, ours: str) -> list[tuple[str, str]]:
    return [(f"{conv}.weight", f"{ours}.conv.weight"), *_bn(bn, f"{ours}.bn")]


def _se(reduce: str, expand: str, ours: str) -> list[tuple[str, str]]:
    return [
        (f"{s}.{t}", f"{ours}.{o}.{t}") for s, o in ((reduce, "reduce"), (expand, "expand")) for t in ("weight", "bias")
    ]


def _torchvision_pairs(model: MobileNet) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    v2 = model.config.arch == "mobilenet_v2"
    for index, layer in enumerate(model.features):
        here = f"features.{index}"
        if isinstance(layer, ConvBnAct):
            pairs += _conv_bn(f"{here}.0", f"{here}.1", here)
        elif isinstance(layer, InvertedResidual):
            pairs += _torchvision_block(here, layer, v2)
        else:
            raise MobilenetError(f"torchvision has no {model.config.arch}; it ships MobileNet V2 and V3 only")
    if isinstance(model.pre_logits, nn.Sequential):
        pairs += [(f"classifier.0.{t}", f"pre_logits.0.{t}") for t in ("weight", "bias")]
    head = "classifier.3" if isinstance(model.pre_logits, nn.Sequential) else "classifier.1"
    return pairs + [(f"{head}.{t}", f"classifier.{t}") for t in ("weight", "bias")]


def _torchvision_block(here: str, block: InvertedResidual, v2: bool) -> list[tuple[str, str]]:
    """V2: ``conv`` = [expand], depthwise, project conv, project BN; V3: ``block`` = [expand], dw, [SE], project."""
    sequence = f"{here}.conv" if v2 else f"{here}.block"
    pairs: list[tuple[str, str]] = []
    step = 0
    if isinstance(block.expand, ConvBnAct):
        pairs += _conv_bn(f"{sequence}.0.0", f"{sequence}.0.1", f"{here}.expand")
        step = 1
    pairs += _conv_bn(f"{sequence}.{step}.0", f"{sequence}.{step}.1", f"{here}.depthwise")
    step += 1
    if isinstance(block.se, SqueezeExcite):
        pairs += _se(f"{sequence}.{step}.fc1", f"{sequence}.{step}.fc2", f"{here}.se")
        step += 1
    if v2:  # torchvision's V2 keeps the linear projection as a bare conv and BN, not a Conv2dNormActivation
        return pairs + _conv_bn(f"{sequence}.{step}", f"{sequence}.{step + 1}", f"{here}.project")
    return pairs + _conv_bn(f"{sequence}.{step}.0", f"{sequence}.{step}.1", f"{here}.project")


def _timm_blocks(state: Mapping[str, Any]) -> list[str]:
    """``blocks.{stage}.{block}`` prefixes of the source, in order."""
    found = {(int(m[1]), int(m[2])) for key in state if (m := re.match(r"^blocks\.(\d+)\.(\d+)\.", key))}
    return [f"blocks.{stage}.{block}" for stage, block in sorted(found)]


def _timm_pairs(model: MobileNet, state: Mapping[str, Any]) -> list[tuple[str, str]]:
    features = list(model.features)
    has_head_conv = model.config.arch == "mobilenet_v2"  # V2's last 1x1 conv is timm's conv_head + bn2
    body = features[1:-1] if has_head_conv else features[1:]
    blocks = _timm_blocks(state)
    if len(blocks) != len(body):
        raise MobilenetError(
            f"the state dict has {len(blocks)} blocks (blocks.S.B), {model.config.arch} has {len(body)}; "
            "is it the timm model named by --arch?"
        )
    pairs = _conv_bn("conv_stem", "bn1", "features.0")
    for offset, (prefix, layer) in enumerate(zip(blocks, body), start=1):
        pairs += _timm_block(prefix, layer, f"features.{offset}")
    if has_head_conv:
        pairs += _conv_bn("conv_head", "bn2", f"features.{len(features) - 1}")
    if isinstance(model.pre_logits, nn.Sequential):
        pairs += [(f"conv_head.{t}", f"pre_logits.0.{t}") for t in ("weight", "bias")]
    return pairs + [(f"classifier.{t}", f"classifier.{t}") for t in ("weight", "bias")]


def _timm_block(prefix: str, layer: nn.Module, ours: str) -> list[tuple[str, str]]:
    if isinstance(layer, ConvBnAct):  # V3's last 1x1 conv, a ConvBnAct block ('cn')
        return _conv_bn(f"{prefix}.conv", f"{prefix}.bn1", ours)
    if isinstance(layer, DepthwiseSeparable):  # V1's 'dsa' blocks: activation after the pointwise conv
        return _conv_bn(f"{prefix}.conv_dw", f"{prefix}.bn1", f"{ours}.depthwise") + _conv_bn(
            f"{prefix}.conv_pw", f"{prefix}.bn2", f"{ours}.pointwise"
        )
    assert isinstance(layer, InvertedResidual)
    has_se = isinstance(layer.se, SqueezeExcite)
    se = _se(f"{prefix}.se.conv_reduce", f"{prefix}.se.conv_expand", f"{ours}.se") if has_se else []
    if not isinstance(layer.expand, ConvBnAct):  # the first block: timm's depthwise-separable 'ds' block
        return (
            _conv_bn(f"{prefix}.conv_dw", f"{prefix}.bn1", f"{ours}.depthwise")
            + se
            + _conv_bn(f"{prefix}.conv_pw", f"{prefix}.bn2", f"{ours}.project")
        )
    return (
        _conv_bn(f"{prefix}.conv_pw", f"{prefix}.bn1", f"{ours}.expand")
        + _conv_bn(f"{prefix}.conv_dw", f"{prefix}.bn2", f"{ours}.depthwise")
        + se
        + _conv_bn(f"{prefix}.conv_pwl", f"{prefix}.bn3", f"{ours}.project")
    )


# ----------------------------------------------------------------------------------------------------------
# Conversion
# ----------------------------------------------------------------------------------------------------------


def _plain(state: Any, label: str) -> dict[str, torch.Tensor]:
    """The tensors of a state dict, unwrapped from a training checkpoint and from DataParallel's ``module.``."""
    if not isinstance(state, Mapping):
        raise MobilenetError(
            f"{label}: expected a state dict (a mapping of names to tensors), got {type(state).__name__}"
        )
    for wrapper in ("state_dict_ema", "state_dict", "model"):  # timm and torchvision training checkpoints
        if isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
            break
    plain = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise MobilenetError(f"{label}: {key!r} is a {type(value).__name__}, not a tensor; is this a state dict?")
        plain[key[len("module.") :] if key.startswith("module.") else key] = value
    return plain


def _num_classes(state: Mapping[str, torch.Tensor], source: SourceArch, label: str) -> int:
    candidates = ("classifier.weight",) if source.layout == "timm" else ("classifier.3.weight", "classifier.1.weight")
    for key in candidates:
        if key in state and state[key].dim() == 2 and state[key].shape[0] > 0:
            return int(state[key].shape[0])
    raise MobilenetError(
        f"{label}: no classifier ({' or '.join(candidates)}) in the state dict; is it a {source.layout} "
        f"{source.name} classification model?"
    )


def _fit(tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor | None:
    """The tensor in our shape, or None; a 1x1 conv's [out, in, 1, 1] fits our Linear's [out, in]."""
    if tensor.shape == shape:
        return tensor
    if tensor.dim() == 4 and len(shape) == 2 and tuple(tensor.shape) == (*shape, 1, 1):
        return tensor.reshape(shape)
    return None


def _convert(
    state: dict[str, torch.Tensor], pairs: list[tuple[str, str]], model: MobileNet, source: SourceArch, label: str
) -> dict[str, torch.Tensor]:
    targets = model.state_dict()
    converted: dict[str, torch.Tensor] = {}
    for source_key, our_key in pairs:
        if source_key not in state:
            if our_key.endswith(_OPTIONAL):
                continue
            raise MobilenetError(
                f"{label}: {source_key!r} (for our {our_key}) is missing; is it a {source.layout} {source.name} "
                "state dict?"
            )
        fitted = _fit(state[source_key], targets[our_key].shape)
        if fitted is None:
            raise MobilenetError(
                f"{label}: {source_key!r} is shaped {list(state[source_key].shape)}, our {our_key} "
                f"{list(targets[our_key].shape)}: not {source.layout}'s {source.name} at width {source.alpha} "
                "(wrong --arch or width?), or a variant whose layer widths differ from ours; the weights cannot "
                "load exactly"
            )
        dtype = torch.float32 if fitted.is_floating_point() else fitted.dtype
        converted[our_key] = fitted.detach().to("cpu", dtype).contiguous().clone()
    unused = sorted(set(state) - {source_key for source_key, _ in pairs})
    if unused:
        raise MobilenetError(
            f"{label}: {len(unused)} key(s) have no place in {model.config.arch} (first: {unused[:3]}); "
            f"is it a {source.layout} {source.name} state dict?"
        )
    return converted


def _convert_for(source: SourceArch, state: Any, label: str) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    plain = _plain(state, label)
    config = source.config(num_classes=_num_classes(plain, source, label))
    model = build_on_meta(config)
    pairs = _torchvision_pairs(model) if source.layout == "torchvision" else _timm_pairs(model, plain)
    return config, _convert(plain, pairs, model, source, label)


def convert_torchvision_state_dict(
    state: Mapping[str, torch.Tensor], arch: str, width_mult: float = 1.0
) -> dict[str, torch.Tensor]:
    """torchvision's ``mobilenet_v2``/``mobilenet_v3_large``/``mobilenet_v3_small`` state dict in our keys.

    Load the result with :func:`model_from_state_dict` or into ``MobileNet(torchvision_arch(arch).config())``.
    """
    source = torchvision_arch(arch, width_mult)
    return _convert_for(source, state, f"torchvision {arch}")[1]


def convert_timm_state_dict(state: Mapping[str, torch.Tensor], arch: str) -> dict[str, torch.Tensor]:
    """timm's ``mobilenetv1_100``, ``mobilenetv2_100``, ``mobilenetv3_large_100``, ... state dict in our keys."""
    return _convert_for(timm_arch(arch), state, f"timm {arch}")[1]


def model_from_state_dict(
    state: Mapping[str, torch.Tensor],
    layout: str,
    arch: str,
    *,
    width_mult: float = 1.0,
    source_name: str | None = None,
) -> MobileNet:
    """Our model (eval mode) holding a torchvision or timm state dict, with that library's preprocessing."""
    source = torchvision_arch(arch, width_mult) if layout == "torchvision" else source_arch(layout, arch)
    label = source_name or f"{layout} {arch}"
    config, converted = _convert_for(source, state, label)
    model = MobileNet(config)
    full = model.state_dict()
    full.update(converted)
    model.load_state_dict(full, strict=True)
    model.weights_info = {
        "source": label,
        "license": LICENSES[layout],
        "extra": {"format": f"{layout} state dict", "model": source.name, "layout": layout},
    }
    return model.eval()


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors from ``.pth``/``.pt``/``.bin`` (read with ``weights_only=True``: no code runs) or ``.safetensors``."""
    file = Path(path)
    if not file.is_file():
        raise MobilenetError(f"state dict file not found: {file}")
    if file.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(file))
        except (SafetensorError, OSError, ValueError) as exc:
            raise MobilenetError(f"{file.name} is not a readable safetensors file ({exc})") from None
    try:
        loaded = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, zip errors and refused globals all differ
        raise MobilenetError(_unloadable(file, exc)) from None
    return _plain(loaded, file.name)


def _unloadable(file: Path, exc: Exception) -> str:
    """torch.load's weights-only refusal is a paragraph that suggests the unsafe load; say it in one line."""
    text = str(exc)
    refused = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if refused:
        return (f"{file.name} pickles Python objects ({refused.group(1)}), which are not loaded because that "
                "could run code; save the weights alone with torch.save(model.state_dict(), path)")
    detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    first = detail.group(1) if detail else (text.strip().splitlines() or [type(exc).__name__])[0]
    return f"{file.name} is not a PyTorch state dict ({first.strip()[:200]}): corrupt, or another format"
