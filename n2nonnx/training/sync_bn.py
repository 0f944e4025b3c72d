"""Synchronised BatchNorm for ONNX graphs: batch statistics computed over all processes.

``nn.SyncBatchNorm.convert_sync_batchnorm`` swaps ``nn.BatchNorm`` modules, and an
:class:`~n2nonnx.backend.OnnxModule` has none: its BatchNormalization nodes are kernels that
call ``torch.nn.functional.batch_norm``. Inside :func:`synchronised_batch_norm`, a
``TorchFunctionMode`` routes every *training-mode* ``F.batch_norm`` call to
:func:`sync_batch_norm`, whose mean and variance are taken over the samples of every
process (two small all-reduces per layer, differentiable), so ``N`` processes with ``B``
samples each normalise, and update their running statistics, like one process with
``N * B``. Evaluation-mode calls are untouched. Nodes with ``training_mode=1`` (ONNX
training graphs) compute their statistics without ``F.batch_norm`` and stay per-process.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

_BATCH_NORM_SIGNATURE = inspect.signature(F.batch_norm)


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum across processes: the gradient of a sum is the sum of gradients."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        total = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, group=group)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return _AllReduceSum.apply(grad, ctx.group), None


def sync_batch_norm(
    x: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    momentum: float,
    eps: float,
    group: Any = None,
) -> torch.Tensor:
    """Training-mode batch normalisation with statistics over every process's batch.

    Same arguments and result as ``F.batch_norm(..., training=True)`` (torch momentum);
    the running statistics are updated in place with the unbiased global variance.

    Args:
        x: ``(N, C, ...)`` input of this process.
        running_mean: ``(C,)`` running mean, updated in place, or ``None``.
        running_var: ``(C,)`` running variance, updated in place, or ``None``.
        weight: ``(C,)`` scale, or ``None``.
        bias: ``(C,)`` shift, or ``None``.
        momentum: weight of the new batch statistics in the running update.
        eps: added to the variance.
        group: the process group (default: the world).

    Returns:
        The normalised input.
    """
    dims = [0, *range(2, x.dim())]
    shape = [1, -1] + [1] * (x.dim() - 2)
    count = torch.tensor([x.numel() // max(1, x.shape[1])], dtype=torch.float64, device=x.device)
    sums = _AllReduceSum.apply(torch.cat([x.sum(dims, dtype=torch.float64), count]), group)
    total = sums[-1]
    mean = (sums[:-1] / total).to(x.dtype)
    centred = x - mean.reshape(shape)
    variance = (
        _AllReduceSum.apply(centred.pow(2).sum(dims, dtype=torch.float64), group) / total
    ).to(x.dtype)
    out = centred * torch.rsqrt(variance + eps).reshape(shape)
    if weight is not None:
        out = out * weight.reshape(shape)
    if bias is not None:
        out = out + bias.reshape(shape)
    with torch.no_grad():
        if running_mean is not None:
            running_mean.mul_(1 - momentum).add_(
                mean.detach().to(running_mean.dtype), alpha=momentum
            )
        if running_var is not None:
            unbiased = variance.detach() * (total / (total - 1)).clamp_min(0).to(variance.dtype)
            running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)
    return out


class _SyncBatchNormMode(TorchFunctionMode):
    """Routes training-mode ``F.batch_norm`` to :func:`sync_batch_norm`."""

    def __init__(self, group: Any = None) -> None:
        super().__init__()
        self.group = group

    def __torch_function__(
        self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if func is F.batch_norm:
            bound = _BATCH_NORM_SIGNATURE.bind(*args, **kwargs)
            bound.apply_defaults()
            values = bound.arguments
            if values["training"] and values["momentum"] is not None:
                return sync_batch_norm(
                    values["input"],
                    values["running_mean"],
                    values["running_var"],
                    values["weight"],
                    values["bias"],
                    values["momentum"],
                    values["eps"],
                    self.group,
                )
        return func(*args, **kwargs)


@contextlib.contextmanager
def synchronised_batch_norm(enabled: bool = True, group: Any = None) -> Iterator[None]:
    """Within the block, training-mode BatchNorm uses statistics of all processes.

    Wrap the forward pass only; the backward pass all-reduces the statistics' gradients
    by itself. A no-op when ``enabled`` is false.

    Args:
        enabled: whether to synchronise.
        group: the process group (default: the world).
    """
    if not enabled:
        yield
        return
    with _SyncBatchNormMode(group):
        yield
