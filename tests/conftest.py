"""Shared test helpers. Tests never write outside tmp folders: caches and configs point there."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

# Assigned outright, not setdefault: a developer's exported TORCH_HOME or XDG_CACHE_HOME points at their home.
_TMP_HOME = tempfile.mkdtemp(prefix="mobilenet-tests-")
atexit.register(shutil.rmtree, _TMP_HOME, ignore_errors=True)
_REDIRECTED = ("MPLCONFIGDIR", "KERAS_HOME", "TORCH_HOME", "XDG_CACHE_HOME", "MOBILENET_HOME")
for _var in (*_REDIRECTED, "TORCHINDUCTOR_CACHE_DIR"):
    os.environ[_var] = os.path.join(_TMP_HOME, _var.lower())
os.environ.setdefault("MPLBACKEND", "Agg")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CORAL = SHARED / "testdata" / "coral"


def calibrate_batchnorm(model: torch.nn.Module, resolution: int = 96, seed: int = 0) -> torch.nn.Module:
    """Give a freshly initialised model real BatchNorm statistics, then put it in eval mode.

    With the initial running statistics (mean 0, var 1) activations shrink layer after layer in eval mode, so
    outputs are ~1e-14 and any comparison would pass trivially.
    """
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, model.config.in_chans, resolution, resolution, generator=generator))
    return model.eval()


@pytest.fixture
def coral_dir() -> Path:
    if not CORAL.is_dir():
        pytest.skip(f"shared test data not found at {CORAL} (it sits beside the repository root)")
    return CORAL
