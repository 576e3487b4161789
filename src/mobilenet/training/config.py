"""Training settings: named recipes in plain TOML files, every value overridable."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from typing import Any, get_args, get_origin, get_type_hints

from mobilenet.checks import is_integer, is_number
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
        # Checked before construction: a wrong type would otherwise surface as a TypeError deep inside.
        config = cls(**{name: coerce_option(name, value) for name, value in values.items()})
        config.validate()
        return config

    def validate(self) -> None:
        """Check every value's type and range; ints become floats and lists tuples where the field says so."""
        for name in FIELD_TYPES:
            setattr(self, name, coerce_option(name, getattr(self, name)))
        for name, test, requirement in _LIMITS:
            value = getattr(self, name)
            if value is not None and not test(value):
                raise MobilenetError(f"{name} must be {requirement}, got {value!r}")
        self._check_choices()
        self._check_combinations()

    def _check_choices(self) -> None:
        if self.optimizer not in ("adamw", "rmsprop", "sgd"):
            raise MobilenetError(f"unknown optimizer {self.optimizer!r}; use adamw, rmsprop or sgd")
        if self.schedule not in ("cosine", "step", "exponential", "constant"):
            raise MobilenetError(f"unknown schedule {self.schedule!r}; use cosine, step, exponential or constant")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise MobilenetError(f"unknown precision {self.precision!r}; use auto, fp32, bf16 or fp16")

    def _check_combinations(self) -> None:
        low, high = self.train_scale
        if not 0.0 < low <= high <= 1.0:
            raise MobilenetError(f"train_scale must satisfy 0 < low <= high <= 1, got {list(self.train_scale)}")
        if self.optimizer == "sgd" and self.momentum == 0:
            raise MobilenetError("the sgd optimizer uses Nesterov momentum, which needs momentum > 0; "
                                 "set momentum (e.g. 0.9) or use another optimizer")
        if self.freeze_backbone_epochs > self.epochs:
            raise MobilenetError(
                f"the frozen-backbone stage (freeze_backbone_epochs, --freeze-epochs: {self.freeze_backbone_epochs}) "
                f"is longer than the run ({self.epochs} epochs); use at most {self.epochs} (equal trains only the head)"
            )


FIELD_TYPES: dict[str, Any] = get_type_hints(TrainConfig)


def _at_least(bound: float) -> Callable[[float], bool]:
    return lambda value: value >= bound


def _above(bound: float) -> Callable[[float], bool]:
    return lambda value: value > bound


def _within(low: float, high: float, high_included: bool = False) -> Callable[[float], bool]:
    if high_included:
        return lambda value: low <= value <= high
    return lambda value: low <= value < high


# (field, test, requirement): each message reads "<field> must be <requirement>, got <value>". None values of
# optional fields mean "the default" and are not range-checked.
_LIMITS: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("epochs", _at_least(1), "an integer >= 1"),
    ("batch_size", _at_least(1), "an integer >= 1"),
    ("lr", _above(0), "a number > 0"),
    ("momentum", _within(0, 1), "in [0, 1)"),
    ("rmsprop_decay", _within(0, 1), "in [0, 1)"),
    ("rmsprop_eps", _above(0), "a number > 0"),
    ("weight_decay", _at_least(0), "a number >= 0 (0 disables it)"),
    ("depthwise_weight_decay", _at_least(0), "a number >= 0, or null to use weight_decay"),
    ("lr_decay", lambda value: 0 < value <= 1, "in (0, 1] (the factor the learning rate is multiplied by)"),
    ("lr_decay_epochs", _above(0), "a number of epochs > 0"),
    ("warmup_epochs", _at_least(0), "a number of epochs >= 0 (0: no warm-up)"),
    ("min_lr_ratio", _within(0, 1, high_included=True), "in [0, 1]"),
    ("label_smoothing", _within(0, 1), "in [0, 1)"),
    ("ema_decay", _within(0, 1), "in [0, 1) (0 disables the EMA)"),
    ("dropout", _within(0, 1), "in [0, 1), or null for the model's default"),
    ("bn_momentum", lambda value: 0 < value <= 1, "in (0, 1], or null for the model's default"),
    ("hflip", _within(0, 1, high_included=True), "a probability in [0, 1]"),
    ("clip_grad_norm", _at_least(0), "a number >= 0 (0 or null disables clipping)"),
    ("seed", _at_least(0), "an integer >= 0"),
    ("val_fraction", lambda value: 0 < value < 1, "in (0, 1)"),
    ("num_workers", _at_least(0), "an integer >= 0 (0 loads data in the main process)"),
    ("freeze_backbone_epochs", _at_least(0), "an integer >= 0 (0: no frozen stage)"),
    ("backbone_lr_scale", _above(0), "a number > 0 (the backbone's share of the learning rate)"),
    ("log_interval", _at_least(1), "an integer >= 1"),
)


class _WrongType(Exception):
    pass


def coerce_option(name: str, value: Any) -> Any:
    """``value`` as training option ``name``'s declared type (an int is a valid float, a list a valid tuple).

    Raises a :class:`MobilenetError` naming the expected type, e.g. "epochs must be an integer, got 'abc'".
    """
    if name not in FIELD_TYPES:
        raise MobilenetError(f"unknown training option {name!r}; known: {', '.join(FIELD_TYPES)}")
    hint = FIELD_TYPES[name]
    try:
        return _coerce(hint, value)
    except _WrongType:
        raise MobilenetError(f"{name} must be {describe_type(hint)}, got {value!r}") from None


def _coerce(hint: Any, value: Any) -> Any:
    args = get_args(hint)
    if type(None) in args:
        inner = [arg for arg in args if arg is not type(None)]
        return None if value is None else _coerce(inner[0], value)
    origin = get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise _WrongType
        return tuple(_coerce(arg, item) for arg, item in zip(args, value))
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise _WrongType
        return dict(value)
    return _coerce_scalar(hint, value)


def _coerce_scalar(hint: Any, value: Any) -> Any:
    # bool is a subclass of int: True must not pass as an epoch count, nor 1 as a switch.
    if hint is bool and isinstance(value, bool):
        return value
    if hint is int and is_integer(value):
        return value
    if hint is float and is_number(value):
        return float(value)
    if hint is str and isinstance(value, str):
        return value
    raise _WrongType


def describe_type(hint: Any) -> str:
    """The declared type in words, for messages: "an integer", "a number or null", ..."""
    args = get_args(hint)
    if type(None) in args:
        inner = [arg for arg in args if arg is not type(None)]
        return f"{describe_type(inner[0])} or null"
    if get_origin(hint) is tuple:
        return f"a list of {len(args)} values, each {describe_type(args[0])}"
    if get_origin(hint) is dict or hint is dict:
        return "a table of key/value pairs"
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return words.get(hint, str(hint))


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
