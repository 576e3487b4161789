"""TorchScript (``.pt``) and torch.export (``.pt2``) files of the BN-folded model, metadata inside the archive."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from mobilenet.export.fold import fold_batchnorm
from mobilenet.export.metadata import export_metadata
from mobilenet.fileio import atomic_path

EXTRA_FILE = "mobilenet.json"


def _sample(model: nn.Module, batch_size: int = 2) -> torch.Tensor:
    resolution = model.config.resolution
    return torch.randn(batch_size, model.config.in_chans, resolution, resolution)


def export_torchscript(model: nn.Module, path: str | Path) -> Path:
    deploy = fold_batchnorm(model)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf_same padding traces its sizes as constants: fixed resolution
        traced = torch.jit.freeze(torch.jit.trace(deploy, _sample(model)))
    extra = {EXTRA_FILE: json.dumps(export_metadata(model, format="torchscript"))}
    target = Path(path)
    with atomic_path(target) as tmp:
        torch.jit.save(traced, str(tmp), _extra_files=extra)
    return target


def export_pt2(model: nn.Module, path: str | Path) -> Path:
    deploy = fold_batchnorm(model)
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(deploy, (_sample(model),), dynamic_shapes={"x": {0: batch}})
    extra = {EXTRA_FILE: json.dumps(export_metadata(model, format="pt2"))}
    target = Path(path)
    with atomic_path(target) as tmp:
        torch.export.save(program, str(tmp), extra_files=extra)
    return target
