"""The fast Python inference path used by `mobilenet predict`: no export file needed.

The model is BN-folded, then handed to the fastest backend that works here:

- ``onednn``: TorchScript trace + freeze with oneDNN Graph fusion (conv, bias, activation and residual add
  fused into single kernels), about 1 s to prepare;
- ``compile``: ``torch.compile`` (inductor) with weight freezing on a channels_last copy; needs a C++
  compiler and about 10 s per process, and measured slower than ``onednn`` here;
- ``jit``: TorchScript trace, frozen and ``optimize_for_inference`` on a channels_last copy;
- ``eager``: the folded channels_last model as it is.

``auto`` tries onednn, then jit, then eager, falling back with a warning when a backend is missing or fails.
In fp32, predictions match the eager model to float rounding (checked by the tests). ``precision="bf16"``
runs weights and activations in bfloat16 (oneDNN's AMX / AVX512-BF16 kernels where the CPU has them), at the
cost of bf16 rounding in the logits (a few percent relative).

Measured on 2 cores, batch 1 at 224, eager and predict timed in turn in fresh processes (docs/performance.md
has the full table): predict fp32 is 3.0x eager for V2 and 3.1x for V3-Large; V1 runs at 93-95% of the
machine's matmul rate (6.1 ms), 2.4-2.9x eager as a script starts and 1.8x eager with a warm allocator.
bf16: 4.2-5.4x.
"""

from __future__ import annotations

import copy
import shutil
import warnings
from collections.abc import Callable

import torch
from torch import nn

from mobilenet.errors import MobilenetError
from mobilenet.export.fold import fold_batchnorm

BACKENDS = ("auto", "onednn", "compile", "jit", "eager")
PRECISIONS = ("fp32", "bf16")


class FastInference(nn.Module):
    """Wraps a prepared callable; takes NCHW float input of any batch size, returns logits."""

    def __init__(
        self, run: Callable[[torch.Tensor], torch.Tensor], backend: str, source: nn.Module, dtype: torch.dtype
    ) -> None:
        super().__init__()
        self._run = run
        self.backend = backend
        self.dtype = dtype
        # oneDNN Graph picks its own layout: channels_last input would only add a reorder there
        self.memory_format = torch.contiguous_format if backend == "onednn" else torch.channels_last
        self.config = getattr(source, "config", None)
        self.class_names = getattr(source, "class_names", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self._run(x.to(self.dtype).contiguous(memory_format=self.memory_format)).float()


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


def _onednn(model: nn.Module, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """TorchScript with oneDNN Graph fusion: conv + bias + activation (+ add) become single fused kernels.

    The fusion flag is process-wide and breaks ``optimize_for_inference`` of other graphs, so it is on only
    while this graph is traced and warmed up (the profiling executor fuses during the first calls).
    """
    example = example.contiguous()  # see FastInference.memory_format
    previous = torch._C._jit_llga_enabled()
    torch.jit.enable_onednn_fusion(True)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frozen = torch.jit.freeze(torch.jit.trace(model.to(memory_format=torch.contiguous_format), example))
            for _ in range(3):
                frozen(example)
    finally:
        torch.jit.enable_onednn_fusion(previous)
    return frozen


_PREPARERS: dict[str, Callable[[nn.Module, torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]] = {
    "onednn": _onednn,
    "compile": _compile,
    "jit": _jit,
    "eager": lambda model, example: model,
}


# torch.compile is left out of auto: slower than both here, and about 10 s to start.
AUTO_ORDER = ("onednn", "jit", "eager")


def fast_inference_model(
    model: nn.Module,
    backend: str = "auto",
    batch_size: int = 1,
    precision: str = "fp32",
) -> FastInference:
    """A BN-folded, channels_last, frozen or compiled copy of ``model`` for inference; ``model`` is unchanged.

    ``compile`` specialises on ``batch_size``: callers that want no recompilation pad to it. ``auto`` tries
    :data:`AUTO_ORDER`.
    """
    if backend not in BACKENDS:
        raise MobilenetError(f"unknown inference backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise MobilenetError(f"unknown inference precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    # Module.float() converts in place: copy first so the caller's model stays as it is; fold in fp32
    deploy = fold_batchnorm(copy.deepcopy(model).float()).to(dtype=dtype, memory_format=torch.channels_last)
    resolution = model.config.resolution
    example = torch.randn(batch_size, model.config.in_chans, resolution, resolution, dtype=dtype).contiguous(
        memory_format=torch.channels_last
    )
    order = AUTO_ORDER if backend == "auto" else [backend]
    for name in order:
        try:
            return FastInference(_PREPARERS[name](deploy, example), name, model, dtype)
        except Exception as exc:  # a backend missing or failing here must not stop a prediction
            if backend != "auto":
                raise
            warnings.warn(f"inference backend {name} unavailable ({type(exc).__name__}: {exc}); falling back",
                          stacklevel=2)
    raise AssertionError("eager never fails to prepare")
