"""The one builder: any :class:`~mobilenet.models.specs.ArchSpec` plus user options becomes a network."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import torch
from torch import nn

from mobilenet.checks import is_integer, is_number
from mobilenet.errors import MobilenetError
from mobilenet.models.layers import (
    ConvBnAct,
    DepthwiseSeparable,
    InvertedResidual,
    Padding,
    make_activation,
    make_divisible,
)
from mobilenet.models.preprocessing import Preprocessing
from mobilenet.models.specs import ARCHITECTURES, ArchSpec, LayerKind, LayerSpec, WidthRule

Pooling = Literal["avg", "max"]
MIN_RESOLUTION = 32  # five stride-2 stages: anything smaller leaves less than one pixel at stride 32
MAX_WIDTH_MULTIPLIER = 32  # mult-adds grow with its square: 32 is ~1,000x the 1.0 model; beyond is a typo


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model; stored with weights so a checkpoint rebuilds itself."""

    arch: str
    width_multiplier: float = 1.0
    resolution: int = 224
    num_classes: int = 1000
    dropout: float | None = None  # None: the family's default (V1 0.001, V2/V3 0.2)
    include_top: bool = True
    pooling: Pooling | None = "avg"  # with include_top=False: None returns the last feature map
    in_chans: int = 3
    bn_eps: float = 1e-3
    bn_momentum: float = 0.01  # PyTorch convention: TF's BN decay 0.99
    padding: Padding = "symmetric"
    features_only: bool = False
    # Width of the stem conv where a release fixes it instead of scaling it with alpha: Keras' V3 keeps 16
    # channels for every alpha, timm's below 0.75. None: the table's width, scaled like every layer.
    stem_channels: int | None = None
    preprocessing: Preprocessing = field(default_factory=Preprocessing)

    def __post_init__(self) -> None:
        validate_options(self)
        if self.preprocessing.resolution != self.resolution:
            # One source of truth: the model's input size is the preprocessing's crop size.
            object.__setattr__(self, "preprocessing", self.preprocessing.replace(resolution=self.resolution))

    @property
    def spec(self) -> ArchSpec:
        return ARCHITECTURES[self.arch]

    def replace(self, **changes: Any) -> ModelConfig:
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise MobilenetError(
                f"unknown model option(s) {sorted(unknown)}; valid options: {sorted(f.name for f in fields(self))}"
            )
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        if "preprocessing" in changes and not isinstance(changes["preprocessing"], Preprocessing):
            raise MobilenetError("preprocessing must be a Preprocessing (Preprocessing.from_dict reads a dict)")
        if "preprocessing" in changes and "resolution" not in changes:
            values["resolution"] = values["preprocessing"].resolution
        return ModelConfig(**values)

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["preprocessing"] = self.preprocessing.to_dict()
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        if not isinstance(values, dict) or "arch" not in values:
            raise MobilenetError("a model config is a table with at least an 'arch' entry (e.g. 'mobilenet_v2')")
        values = dict(values)
        if "preprocessing" in values and isinstance(values["preprocessing"], dict):
            values["preprocessing"] = Preprocessing.from_dict(values["preprocessing"])
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise MobilenetError(f"unknown model config fields {sorted(unknown)}")
        return cls(**values)


def validate_options(config: ModelConfig) -> None:
    """Raise a one-line :class:`MobilenetError` for every option a user can get wrong."""
    if config.arch not in ARCHITECTURES:
        raise MobilenetError(f"unknown architecture {config.arch!r}; known: {', '.join(ARCHITECTURES)}")
    alpha = config.width_multiplier
    if not is_number(alpha) or alpha <= 0:
        raise MobilenetError(f"width_multiplier (alpha) must be a number > 0, got {alpha!r}")
    if alpha > MAX_WIDTH_MULTIPLIER:
        raise MobilenetError(
            f"width_multiplier (alpha) {alpha:g} is too wide: at most {MAX_WIDTH_MULTIPLIER} (already ~1,000x the "
            "mult-adds of 1.0; the papers go up to 1.4)"
        )
    res = config.resolution
    if not is_integer(res) or res < MIN_RESOLUTION:
        raise MobilenetError(f"resolution must be an integer >= {MIN_RESOLUTION}, got {res!r}")
    classes = config.num_classes
    if not is_integer(classes) or classes < 0:
        raise MobilenetError(f"num_classes must be an integer >= 0 (0 removes the classifier), got {classes!r}")
    for name in ("include_top", "features_only"):
        if not isinstance(getattr(config, name), bool):
            raise MobilenetError(f"{name} must be True or False, got {getattr(config, name)!r}")
    for name in ("bn_eps", "bn_momentum") + (("dropout",) if config.dropout is not None else ()):
        value = getattr(config, name)
        if not is_number(value):
            raise MobilenetError(f"{name} must be a finite number, got {value!r}")
    if config.dropout is not None and not 0.0 <= config.dropout < 1.0:
        raise MobilenetError(f"dropout must be in [0, 1), got {config.dropout!r}")
    if config.pooling not in (None, "avg", "max"):
        raise MobilenetError(f"pooling must be 'avg', 'max' or None, got {config.pooling!r}")
    if config.include_top and config.pooling is None:
        raise MobilenetError("include_top=True needs pooling='avg' or 'max'; use include_top=False for feature maps")
    if not is_integer(config.in_chans) or config.in_chans < 1:
        raise MobilenetError(f"in_chans must be a positive integer, got {config.in_chans!r}")
    if config.padding not in ("symmetric", "tf_same"):
        raise MobilenetError(f"padding must be 'symmetric' or 'tf_same', got {config.padding!r}")
    stem = config.stem_channels
    if stem is not None and (not is_integer(stem) or stem < 1):
        raise MobilenetError(f"stem_channels must be a positive integer or None, got {stem!r}")
    if not config.bn_eps > 0 or not 0 < config.bn_momentum <= 1:
        raise MobilenetError("bn_eps must be > 0 and bn_momentum in (0, 1] (PyTorch convention: 1 - TF decay)")


def config_of(model: object, caller: str) -> ModelConfig:
    """The config of a MobileNet, or a one-line error for anything else passed where one belongs."""
    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        raise MobilenetError(f"{caller} takes a MobileNet (mobilenet.load or create_model), got {type(model).__name__}")
    return config


@dataclass(frozen=True)
class FeatureInfo:
    """One backbone output: where it comes from, its width and its stride (timm's ``feature_info``)."""

    module: str
    num_chs: int
    reduction: int


class WidthScaler:
    """Applies a family's width rule to the table's channel counts."""

    def __init__(self, spec: ArchSpec, alpha: float) -> None:
        self.rule = spec.width_rule
        self.alpha = alpha

    def __call__(self, channels: float, narrows: bool = True) -> int:
        alpha = self.alpha if narrows else max(self.alpha, 1.0)
        if self.rule is WidthRule.TRUNCATE:
            return max(int(channels * alpha), 1)
        return make_divisible(channels * alpha)


class MobileNet(nn.Module):
    """A MobileNet body built from a table, with a Keras/timm-style head.

    Parts: ``features`` (stem, blocks and the last 1x1 conv, one entry per network layer), ``pool``,
    ``pre_logits`` (V3's no-BN 1x1 layer), ``dropout`` and ``classifier``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.class_names: list[str] | None = None
        self.weights_info: dict[str, Any] = {}
        spec = config.spec
        layers, self.feature_info = _build_body(spec, config)
        self.features = nn.Sequential(*layers)
        self.num_features = self.feature_info[-1].num_chs
        self.head_hidden_size = self.num_features
        self.pool: nn.Module = nn.Identity()
        self.pre_logits: nn.Module = nn.Identity()
        self.dropout: nn.Module = nn.Identity()
        self.classifier: nn.Module = nn.Identity()
        if not config.features_only:
            self._build_head(spec, config)
        _init_weights(self)

    def _build_head(self, spec: ArchSpec, config: ModelConfig) -> None:
        if config.include_top or config.pooling is not None:
            pooling = "avg" if config.include_top else config.pooling
            self.pool = nn.Sequential(
                nn.AdaptiveAvgPool2d(1) if pooling == "avg" else nn.AdaptiveMaxPool2d(1), nn.Flatten(1)
            )
        if not config.include_top:
            return
        width = self.num_features
        if spec.head.pre_logits:
            head = WidthScaler(spec, config.width_multiplier)(spec.head.pre_logits, narrows=spec.head_scales_down)
            self.pre_logits = nn.Sequential(
                nn.Linear(width, head), make_activation(spec.head.pre_logits_activation)
            )
            width = head
        self.head_hidden_size = width
        dropout = spec.head.dropout if config.dropout is None else config.dropout
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        if config.num_classes > 0:
            self.classifier = nn.Linear(width, config.num_classes)

    @property
    def preprocessing(self) -> Preprocessing:
        return self.config.preprocessing

    def save(self, path: str, **metadata: Any) -> Any:
        """Write weights, config, class names and preprocessing to a safetensors file, atomically."""
        from mobilenet.weights.format import save_weights

        return save_weights(self, path, **metadata)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map (stride 32), before pooling."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pre_logits(self.pool(x))
        if pre_logits:
            return x
        return self.classifier(self.dropout(x))

    def forward_intermediates(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Return the last feature map and the maps at strides 2, 4, 8, 16 and 32 (see ``feature_info``)."""
        taps = {int(info.module.rsplit(".", 1)[1]) for info in self.feature_info}
        intermediates = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in taps:
                intermediates.append(x)
        return x, intermediates

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.config.features_only:
            return self.forward_intermediates(x)[1]
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a freshly initialised one for ``num_classes`` (transfer learning)."""
        if not is_integer(num_classes) or num_classes < 0:
            raise MobilenetError(f"num_classes must be an integer >= 0, got {num_classes!r}")
        if num_classes > 0 and (not self.config.include_top or self.config.features_only):
            raise MobilenetError("this model was built without a classifier (include_top=False or features_only); "
                                 "create it with include_top=True to add one")
        self.classifier = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            nn.init.normal_(self.classifier.weight, 0, 0.01)
            nn.init.zeros_(self.classifier.bias)
        self.config = self.config.replace(num_classes=num_classes)


def _build_body(spec: ArchSpec, config: ModelConfig) -> tuple[list[nn.Module], list[FeatureInfo]]:
    """Walk the table rows, expanding repeats, and track widths and strides."""
    scale = WidthScaler(spec, config.width_multiplier)
    conv_options: dict[str, Any] = dict(padding=config.padding, bn_eps=config.bn_eps, bn_momentum=config.bn_momentum)
    layers: list[nn.Module] = []
    reductions: list[int] = []
    widths: list[int] = []
    in_channels, table_in, reduction = config.in_chans, None, 1
    for index, row in enumerate(spec.layers):
        for repeat in range(row.repeats):
            stride = row.stride if repeat == 0 else 1
            out_channels = scale(row.out_channels, row.narrows)
            if index == 0 and config.stem_channels is not None:
                out_channels = config.stem_channels
            layers.append(
                _make_layer(spec, row, scale, in_channels, table_in, out_channels, stride, conv_options)
            )
            reduction *= stride
            reductions.append(reduction)
            widths.append(out_channels)
            in_channels, table_in = out_channels, row.out_channels
    feature_info = []
    for target in (2, 4, 8, 16, 32):
        last = max((i for i, r in enumerate(reductions) if r == target), default=None)
        if last is not None:
            feature_info.append(FeatureInfo(f"features.{last}", widths[last], target))
    return layers, feature_info


def _make_layer(
    spec: ArchSpec,
    row: LayerSpec,
    scale: WidthScaler,
    in_channels: int,
    table_in: int | None,
    out_channels: int,
    stride: int,
    conv_options: dict[str, Any],
) -> nn.Module:
    if row.kind is LayerKind.CONV:
        return ConvBnAct(in_channels, out_channels, row.kernel, stride, activation=row.activation, **conv_options)
    if row.kind is LayerKind.DEPTHWISE_SEPARABLE:
        return DepthwiseSeparable(
            in_channels, out_channels, row.kernel, stride, activation=row.activation, **conv_options
        )
    if row.expansion is not None:
        # V2: "expansion factor applied to the size of the input tensor" (Sec. 4)
        expanded = int(round(in_channels * row.expansion))
    else:
        # V3 gives absolute expanded widths; the releases scale them as a ratio of the (scaled) input width,
        # which is what the TF-slim / Keras checkpoints for alpha != 1 were trained with.
        assert row.expanded is not None and table_in is not None
        expanded = make_divisible(in_channels * row.expanded / table_in)
        if row.expanded == table_in:
            expanded = in_channels
    se_channels = make_divisible(expanded / spec.se_reduction) if row.squeeze_excite else None
    return InvertedResidual(
        in_channels,
        expanded,
        out_channels,
        row.kernel,
        stride,
        row.activation,
        se_channels=se_channels,
        se_gate=spec.se_gate,
        **conv_options,
    )


def _init_weights(model: nn.Module) -> None:
    """He-normal convs, unit BN, small-normal classifier: the torchvision/TF-slim defaults for MobileNets."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.01)
            nn.init.zeros_(module.bias)
