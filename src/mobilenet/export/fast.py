"""The fast Python inference path used by `mobilenet predict` and `evaluate`: no export file needed.

The model is BN-folded and put in channels_last, then handed to the fastest backend that works here:

- ``compile``: ``torch.compile`` (inductor) with weight freezing, which pre-packs the conv weights for oneDNN
  and fuses the activations; it needs a C++ compiler and pays a one-off compile of about 10 s per process;
- ``jit``: TorchScript trace, frozen and ``optimize_for_inference`` (oneDNN convolutions), ~1 s to prepare;
- ``eager``: the folded channels_last model as it is.

``auto`` tries them in that order and falls back, with a warning, when a backend is missing or fails.
Numerics stay fp32: predictions match the eager model to float rounding (checked by the tests).
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable

import torch
from torch import nn

from mobilenet.export.fold import fold_batchnorm

BACKENDS = ("auto", "compile", "jit", "eager")


class FastInference(nn.Module):
    """Wraps a prepared callable; takes NCHW float input of any batch size, returns logits."""

    def __init__(self, run: Callable[[torch.Tensor], torch.Tensor], backend: str, source: nn.Module) -> None:
        super().__init__()
        self._run = run
        self.backend = backend
        self.config = getattr(source, "config", None)
        self.class_names = getattr(source, "class_names", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self._run(x.contiguous(memory_format=torch.channels_last))


def _compile(model: nn.Module, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    if shutil.which("g++") is None and shutil.which("c++") is None:
        raise RuntimeError("no C++ compiler for inductor")
    compiled = torch.compile(model, options={"freezing": True}, dynamic=False)
    with torch.inference_mode():
        compiled(example)  # compile now, not on the user's first image
    return compiled


def _jit(model: nn.Module, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model, example)))
        traced(example)
    return traced


_PREPARERS: dict[str, Callable[[nn.Module, torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]] = {
    "compile": _compile,
    "jit": _jit,
    "eager": lambda model, example: model,
}


def fast_inference_model(model: nn.Module, backend: str = "auto", batch_size: int = 1) -> FastInference:
    """A BN-folded, channels_last, frozen or compiled copy of ``model`` for inference; ``model`` is unchanged."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown inference backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    deploy = fold_batchnorm(model).to(memory_format=torch.channels_last)
    resolution = model.config.resolution
    example = torch.randn(batch_size, model.config.in_chans, resolution, resolution).contiguous(
        memory_format=torch.channels_last
    )
    order = ["compile", "jit", "eager"] if backend == "auto" else [backend]
    for name in order:
        try:
            return FastInference(_PREPARERS[name](deploy, example), name, model)
        except Exception as exc:  # a backend missing or failing here must not stop a prediction
            if backend != "auto":
                raise
            warnings.warn(f"inference backend {name} unavailable ({type(exc).__name__}: {exc}); falling back",
                          stacklevel=2)
    raise AssertionError("eager never fails to prepare")
