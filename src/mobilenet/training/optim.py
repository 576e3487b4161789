"""Optimizers, parameter groups and learning-rate schedules for the recipes."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from mobilenet.training.config import TrainConfig


def parameter_groups(model: nn.Module, config: TrainConfig, head_names: tuple[str, ...] = ()) -> list[dict]:
    """Split parameters so that BatchNorm and biases get no weight decay, depthwise filters get
    ``depthwise_weight_decay`` (V1 paper: little or none), and head parameters can have their own lr scale."""
    depthwise_decay = config.weight_decay if config.depthwise_weight_decay is None else config.depthwise_weight_decay
    depthwise_ids = {
        id(m.weight) for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels
    }
    groups: dict[tuple[str, float], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        part = "head" if name.startswith(head_names) else "backbone"
        if param.ndim <= 1:
            decay = 0.0
        elif id(param) in depthwise_ids:
            decay = depthwise_decay
        else:
            decay = config.weight_decay
        groups.setdefault((part, decay), []).append(param)
    return [
        {"params": params, "weight_decay": decay, "part": part}
        for (part, decay), params in sorted(groups.items(), key=lambda item: (item[0][0], item[0][1]))
    ]


def build_optimizer(groups: list[dict], config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    if config.optimizer == "rmsprop":
        # PyTorch's epsilon sits outside the square root, TF's inside: a large eps (TF-slim uses 1.0) damps
        # the first steps in both, which is what keeps RMSprop stable on MobileNets.
        return torch.optim.RMSprop(
            groups, lr=config.lr, alpha=config.rmsprop_decay, eps=config.rmsprop_eps, momentum=config.momentum
        )
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True)


def lr_multiplier(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Learning-rate factor per optimizer step: linear warm-up, then the recipe's decay."""
    warmup = int(config.warmup_epochs * steps_per_epoch)
    total = config.epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        epoch = step / steps_per_epoch
        if config.schedule == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
            return config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine
        if config.schedule == "step":
            return config.lr_decay ** math.floor(epoch / config.lr_decay_epochs)
        if config.schedule == "exponential":
            return config.lr_decay ** (epoch / config.lr_decay_epochs)
        return 1.0

    return factor
