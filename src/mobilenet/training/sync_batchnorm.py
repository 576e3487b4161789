"""Synchronised BatchNorm that also runs on CPU (gloo): PyTorch's ``SyncBatchNorm`` is GPU-only.

Batch statistics are summed over all processes with a differentiable all-reduce, so N processes with batch B/N
normalise exactly as one process with batch B, and gradients flow through the shared statistics.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; the gradient of a sum is the sum of the gradients, so backward all-reduces too."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        total = grad.clone()
        dist.all_reduce(total)
        return total


class DistributedBatchNorm2d(nn.BatchNorm2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        channels = x.shape[1]
        count = torch.tensor([x.numel() / channels], dtype=x.dtype, device=x.device)
        sums = _AllReduceSum.apply(torch.cat([x.sum(dim=(0, 2, 3)), count]))
        total = sums[-1]
        mean = sums[:channels] / total
        # Two passes, like the local kernel: E[x^2] - E[x]^2 cancels catastrophically when the variance is small
        # next to the mean (1x1 feature maps at low resolution), and then the processes disagree with one.
        centred = x - mean.view(1, channels, 1, 1)
        var = _AllReduceSum.apply((centred * centred).sum(dim=(0, 2, 3))) / total
        self._update_running_stats(mean.detach(), var.detach(), total.detach())
        scale = torch.rsqrt(var + self.eps)
        shape = (1, channels, 1, 1)
        out = centred * scale.view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, total: torch.Tensor) -> None:
        if not self.track_running_stats:
            return
        self.num_batches_tracked += 1
        momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        unbiased = var * total / (total - 1).clamp(min=1)
        self.running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
        self.running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """GPU: PyTorch's SyncBatchNorm. CPU: :class:`DistributedBatchNorm2d`, with the same parameter names."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            replacement = DistributedBatchNorm2d(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            ).to(child.weight.device)
            replacement.load_state_dict(child.state_dict())
            setattr(module, name, replacement)
        else:
            convert_sync_batchnorm(child, device)
    return module
