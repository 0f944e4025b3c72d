"""Normalisation ops: BatchNormalization (train/eval aware), Instance/Layer/Group/RMS/Lp norms, LRN."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from n2nonnx.backend.registry import register_op
from n2nonnx.backend.spec import Kernel, NodeSpec
from n2nonnx.errors import UnsupportedOpError


@register_op("BatchNormalization", versions=(1, 6, 7, 9, 14, 15))
def batch_norm(spec: NodeSpec) -> Kernel:
    """BatchNormalization (``spatial=0``, which opsets before 9 allowed, is refused).

    The module's train/eval flag decides: in eval mode the running statistics normalise;
    in train mode the batch statistics do and the running-stat buffers are updated in place
    exactly like ``torch.nn.BatchNorm`` (torch momentum = 1 - ONNX momentum, unbiased
    variance for the running update). A node with ``training_mode=1`` (an ONNX training
    graph) is computed functionally with ONNX semantics and returns the updated statistics
    as its extra outputs. ``is_test`` (before opset 7) is ignored in favour of the module's flag.
    """
    eps = spec.attr("epsilon", 1e-5)
    momentum = spec.attr("momentum", 0.9)
    if spec.attr("spatial", 1) == 0:
        raise UnsupportedOpError(
            f"node {spec.name!r}: BatchNormalization with spatial=0 is not supported"
        )
    node_training = bool(spec.attr("training_mode", 0))
    is_training = spec.is_training
    n_outputs = len([o for o in spec.outputs if o])

    def onnx_training(
        x: torch.Tensor,
        scale: torch.Tensor,
        bias: torch.Tensor,
        mean: torch.Tensor,
        var: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dims = [0] + list(range(2, x.dim()))
        batch_mean = x.mean(dims)
        batch_var = x.var(dims, unbiased=False)
        shape = [1, -1] + [1] * (x.dim() - 2)
        y = (x - batch_mean.reshape(shape)) / torch.sqrt(batch_var.reshape(shape) + eps)
        y = y * scale.reshape(shape) + bias.reshape(shape)
        new_mean = mean * momentum + batch_mean * (1 - momentum)
        new_var = var * momentum + batch_var * (1 - momentum)
        return y, new_mean.to(mean.dtype), new_var.to(var.dtype)

    def kernel(
        x: torch.Tensor,
        scale: torch.Tensor,
        bias: torch.Tensor,
        mean: torch.Tensor,
        var: torch.Tensor,
    ):
        if node_training:
            return onnx_training(x, scale, bias, mean, var)
        if is_training():
            y = F.batch_norm(x, mean, var, scale, bias, True, 1.0 - momentum, eps)
            return (y, mean, var) if n_outputs > 1 else y
        if mean.dtype != x.dtype:
            mean, var = mean.to(x.dtype), var.to(x.dtype)
        return F.batch_norm(x, mean, var, scale.to(x.dtype), bias.to(x.dtype), False, 0.0, eps)

    return kernel


@register_op("InstanceNormalization", versions=(1, 6, 22))
def instance_norm(spec: NodeSpec) -> Kernel:
    """InstanceNormalization with per-channel scale and bias."""
    eps = spec.attr("epsilon", 1e-5)
    return lambda x, scale, bias: F.instance_norm(x, weight=scale, bias=bias, eps=eps)


def _stash(x: torch.Tensor, stash_type: int) -> torch.Tensor:
    if stash_type == 1 and x.dtype in (torch.float16, torch.bfloat16):
        return x.float()
    return x


@register_op("LayerNormalization", versions=(17,))
def layer_norm(spec: NodeSpec) -> Kernel:
    """LayerNormalization over axes ``axis..-1``; optional Mean / InvStdDev outputs."""
    axis = spec.attr("axis", -1)
    eps = spec.attr("epsilon", 1e-5)
    stash_type = spec.attr("stash_type", 1)
    n_outputs = len([o for o in spec.outputs if o])

    def kernel(x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None):
        start = axis % x.dim()
        shape = tuple(x.shape[start:])
        if (
            n_outputs == 1
            and tuple(scale.shape) == shape
            and (bias is None or tuple(bias.shape) == shape)
        ):
            return F.layer_norm(x, shape, scale, bias, eps)
        work = _stash(x, stash_type)
        dims = tuple(range(start, x.dim()))
        mean = work.mean(dims, keepdim=True)
        inv_std = torch.rsqrt((work - mean).pow(2).mean(dims, keepdim=True) + eps)
        y = ((work - mean) * inv_std).to(x.dtype) * scale
        if bias is not None:
            y = y + bias
        return y, mean, inv_std

    return kernel


@register_op("GroupNormalization", versions=(18,))
def group_norm_18(spec: NodeSpec) -> Kernel:
    """GroupNormalization (opset 18, marked deprecated by opset 21 but run by onnxruntime): scale and bias per group."""
    groups, eps = spec.attr("num_groups"), spec.attr("epsilon", 1e-5)

    def kernel(x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        per_group = x.shape[1] // groups
        return F.group_norm(
            x, groups, scale.repeat_interleave(per_group), bias.repeat_interleave(per_group), eps
        )

    return kernel


@register_op("GroupNormalization", versions=(21,))
def group_norm(spec: NodeSpec) -> Kernel:
    """GroupNormalization (opset 21): scale and bias per channel."""
    groups, eps = spec.attr("num_groups"), spec.attr("epsilon", 1e-5)
    stash_type = spec.attr("stash_type", 1)

    def kernel(x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        work = _stash(x, stash_type)
        return F.group_norm(work, groups, scale.to(work.dtype), bias.to(work.dtype), eps).to(
            x.dtype
        )

    return kernel


@register_op("RMSNormalization", versions=(23,))
def rms_norm(spec: NodeSpec) -> Kernel:
    """RMSNormalization over axes ``axis..-1``."""
    axis, eps = spec.attr("axis", -1), spec.attr("epsilon", 1e-5)
    stash_type = spec.attr("stash_type", 1)

    def kernel(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        work = _stash(x, stash_type)
        dims = tuple(range(axis % x.dim(), x.dim()))
        y = work * torch.rsqrt(work.pow(2).mean(dims, keepdim=True) + eps)
        return y.to(x.dtype) * scale

    return kernel


@register_op("LpNormalization", versions=(1, 22))
def lp_norm(spec: NodeSpec) -> Kernel:
    """LpNormalization along ``axis`` with p = 1 or 2 (zero vectors stay zero)."""
    axis, p = spec.attr("axis", -1), spec.attr("p", 2)

    def kernel(x: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(x, ord=p, dim=axis, keepdim=True)
        return torch.where(norm == 0, torch.zeros_like(x), x / norm)

    return kernel


@register_op("MeanVarianceNormalization", versions=(9, 13))
def mean_variance_norm(spec: NodeSpec) -> Kernel:
    """(x - mean) / (std + 1e-9) over ``axes`` (default [0, 2, 3])."""
    axes = tuple(spec.attr("axes", [0, 2, 3]))

    def kernel(x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(axes, keepdim=True)
        std = (x - mean).pow(2).mean(axes, keepdim=True).sqrt()
        return (x - mean) / (std + 1e-9)

    return kernel


@register_op("LRN", versions=(1, 13))
def lrn(spec: NodeSpec) -> Kernel:
    """Local response normalisation across channels."""
    size = spec.attr("size")
    alpha, beta, bias = spec.attr("alpha", 1e-4), spec.attr("beta", 0.75), spec.attr("bias", 1.0)
    return lambda x: F.local_response_norm(x, size, alpha, beta, bias)
