"""Training settings: named recipes in plain TOML files, every value overridable."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from typing import Any

from mobilenet.errors import MobilenetError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class TrainConfig:
    """Every knob of a training run. Recipes set a subset; the rest keep these defaults."""

    model: str = "mobilenet_v1_0.25_96"
    recipe: str = "finetune"
    description: str = ""
    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "adamw"  # adamw | rmsprop | sgd
    lr: float = 0.003
    momentum: float = 0.9
    rmsprop_decay: float = 0.9
    rmsprop_eps: float = 1.0  # TF's RMSprop epsilon sits inside the sqrt; 1.0 is TF-slim's default for MobileNets
    weight_decay: float = 0.01
    depthwise_weight_decay: float | None = None  # None: same as weight_decay (V1 paper: little or none)
    schedule: str = "cosine"  # cosine | step | exponential | constant
    lr_decay: float = 0.98
    lr_decay_epochs: float = 1.0
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.0
    label_smoothing: float = 0.1
    ema_decay: float = 0.0  # 0 disables the exponential moving average of the weights
    dropout: float | None = None
    bn_momentum: float | None = None  # None: the model's (0.01, TF's 0.99 decay); 0.1 suits short runs
    train_scale: tuple[float, float] = (0.25, 1.0)
    hflip: float = 0.5
    clip_grad_norm: float | None = 5.0
    channels_last: bool = True
    precision: str = "auto"  # auto | fp32 | bf16 (CPU autocast) | fp16 (CUDA AMP)
    seed: int = 0
    deterministic: bool = False
    val_fraction: float = 0.2
    num_workers: int = 0
    sync_bn: bool = False
    device: str = "auto"
    freeze_backbone_epochs: int = 0  # > 0: stage 1 trains only the head (transfer learning)
    backbone_lr_scale: float = 0.1  # stage 2 learning rate for the backbone, relative to lr
    log_interval: int = 10
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["train_scale"] = list(self.train_scale)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise MobilenetError(f"unknown training option(s) {sorted(unknown)}; known: {sorted(known)}")
        values = dict(values)
        if "train_scale" in values:
            values["train_scale"] = tuple(values["train_scale"])
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        if self.epochs < 1:
            raise MobilenetError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise MobilenetError(f"batch size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise MobilenetError(f"learning rate must be > 0, got {self.lr}")
        if self.optimizer not in ("adamw", "rmsprop", "sgd"):
            raise MobilenetError(f"unknown optimizer {self.optimizer!r}; use adamw, rmsprop or sgd")
        if self.schedule not in ("cosine", "step", "exponential", "constant"):
            raise MobilenetError(f"unknown schedule {self.schedule!r}; use cosine, step, exponential or constant")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise MobilenetError(f"unknown precision {self.precision!r}; use auto, fp32, bf16 or fp16")
        if not 0.0 <= self.ema_decay < 1.0:
            raise MobilenetError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise MobilenetError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        low, high = self.train_scale
        if not 0.0 < low <= high <= 1.0:
            raise MobilenetError(f"train_scale must satisfy 0 < low <= high <= 1, got {self.train_scale}")


def available_recipes() -> list[str]:
    folder = resources.files("mobilenet") / "recipes"
    return sorted(item.name.removesuffix(".toml") for item in folder.iterdir() if item.name.endswith(".toml"))


def load_recipe(name: str) -> dict[str, Any]:
    recipe = resources.files("mobilenet") / "recipes" / f"{name}.toml"
    if not recipe.is_file():
        raise MobilenetError(f"unknown recipe {name!r}; available: {', '.join(available_recipes())}")
    return tomllib.loads(recipe.read_text(encoding="utf-8"))


def make_train_config(recipe: str = "finetune", **overrides: Any) -> TrainConfig:
    """Start from a recipe, then apply the overrides that are not ``None`` (unset CLI flags)."""
    values = load_recipe(recipe)
    values["recipe"] = recipe
    values.update({key: value for key, value in overrides.items() if value is not None})
    return TrainConfig.from_dict(values)
