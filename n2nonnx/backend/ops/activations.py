"""Activation functions, Clip, Softmax / LogSoftmax / Hardmax."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from n2nonnx.backend.ops._util import fixed, static_or_runtime
from n2nonnx.backend.registry import register_op
from n2nonnx.backend.spec import Builder, Kernel, NodeSpec

# op -> (torch function, schema versions); the version changes drop consumed_inputs or add types
_ELEMENTWISE: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], tuple[int, ...]]] = {
    "Relu": (torch.relu, (1, 6, 13, 14)),
    "Sigmoid": (torch.sigmoid, (1, 6, 13)),
    "Tanh": (torch.tanh, (1, 6, 13)),
    "Softsign": (F.softsign, (1, 22)),
    "Mish": (F.mish, (18, 22)),
}


for _name, (_fn, _versions) in _ELEMENTWISE.items():
    register_op(_name, versions=_versions)(fixed(_fn))


@register_op("Softplus", versions=(1, 22))
def softplus(spec: NodeSpec) -> Kernel:
    """Softplus: log(1 + exp(x)), exact for large x."""
    return lambda x: F.softplus(x, threshold=30.0 if x.dtype != torch.float16 else 10.0)


@register_op("HardSwish", versions=(14, 22))
def hard_swish(spec: NodeSpec) -> Kernel:
    """HardSwish: x * clamp(x/6 + 1/2, 0, 1)."""
    return F.hardswish


@register_op("LeakyRelu", versions=(1, 6, 16))
def leaky_relu(spec: NodeSpec) -> Kernel:
    """LeakyRelu with slope ``alpha`` (default 0.01)."""
    alpha = spec.attr("alpha", 0.01)
    return lambda x: F.leaky_relu(x, alpha)


@register_op("PRelu", versions=(1, 6, 7, 9, 16))
def prelu(spec: NodeSpec) -> Kernel:
    """PRelu with a slope broadcast against the input.

    Before opset 7 the slope had size 1 or the input's shape, both numpy-broadcastable.
    """
    return lambda x, slope: torch.where(x >= 0, x, x * slope)


@register_op("Elu", versions=(1, 6, 22))
def elu(spec: NodeSpec) -> Kernel:
    """Elu with ``alpha`` (default 1)."""
    alpha = spec.attr("alpha", 1.0)
    return lambda x: F.elu(x, alpha)


@register_op("Celu", versions=(12, 28))
def celu(spec: NodeSpec) -> Kernel:
    """Celu with ``alpha`` (default 1)."""
    alpha = spec.attr("alpha", 1.0)
    return lambda x: F.celu(x, alpha)


@register_op("Selu", versions=(1, 6, 22))
def selu(spec: NodeSpec) -> Kernel:
    """Selu with ``alpha`` and ``gamma`` (opset 1 had shorter default constants)."""
    legacy = spec.schema_version == 1
    alpha = spec.attr("alpha", 1.6732 if legacy else 1.67326319217681884765625)
    gamma = spec.attr("gamma", 1.0507 if legacy else 1.05070102214813232421875)
    return lambda x: gamma * torch.where(x > 0, x, alpha * torch.expm1(x))


@register_op("HardSigmoid", versions=(1, 6, 22))
def hard_sigmoid(spec: NodeSpec) -> Kernel:
    """HardSigmoid: clamp(alpha * x + beta, 0, 1)."""
    alpha, beta = spec.attr("alpha", 0.2), spec.attr("beta", 0.5)
    return lambda x: torch.clamp(x * alpha + beta, 0.0, 1.0)


@register_op("ThresholdedRelu", versions=(10, 22))
def thresholded_relu(spec: NodeSpec) -> Kernel:
    """X where x > alpha, else 0."""
    alpha = spec.attr("alpha", 1.0)
    return lambda x: torch.where(x > alpha, x, torch.zeros_like(x))


@register_op("Shrink", versions=(9,))
def shrink(spec: NodeSpec) -> Kernel:
    """Shrink with ``lambd`` and ``bias``."""
    lambd, bias = spec.attr("lambd", 0.5), spec.attr("bias", 0.0)

    def kernel(x: torch.Tensor) -> torch.Tensor:
        zero = torch.zeros_like(x)
        return torch.where(x < -lambd, x + bias, torch.where(x > lambd, x - bias, zero)).to(x.dtype)

    return kernel


@register_op("Gelu", versions=(20,))
def gelu(spec: NodeSpec) -> Kernel:
    """Gelu, exact (``approximate="none"``) or tanh approximation."""
    approximate = spec.attr("approximate", "none")
    return lambda x: F.gelu(x, approximate=approximate)


@register_op("Swish", versions=(24,))
def swish(spec: NodeSpec) -> Kernel:
    """Swish: x * sigmoid(alpha * x)."""
    alpha = spec.attr("alpha", 1.0)
    return lambda x: x * torch.sigmoid(alpha * x)


@register_op("Clip", versions=(1, 6))
def clip_attr(spec: NodeSpec) -> Kernel:
    """Clip before opset 11: ``min`` / ``max`` attributes (opset 6 only spelled out the defaults)."""
    low, high = spec.attr("min", float("-inf")), spec.attr("max", float("inf"))
    return lambda x: torch.clamp(x, low, high)


def _scalar(value: Any) -> float | int:
    return value.reshape(-1)[0].item()


@register_op("Clip", versions=(11, 12, 13))
def clip(spec: NodeSpec) -> Kernel:
    """Clip from opset 11: optional ``min`` / ``max`` inputs."""
    low, low_dynamic = static_or_runtime(spec, 1, convert=_scalar)
    high, high_dynamic = static_or_runtime(spec, 2, convert=_scalar)
    if not low_dynamic and not high_dynamic:
        if low is None and high is None:
            return lambda x, *_: x
        return lambda x, *_: torch.clamp(x, low, high)

    def kernel(
        x: torch.Tensor, low_t: torch.Tensor | None = None, high_t: torch.Tensor | None = None
    ) -> torch.Tensor:
        out = x
        if low_t is not None:
            out = torch.maximum(out, low_t.to(x.dtype))
        if high_t is not None:
            out = torch.minimum(out, high_t.to(x.dtype))
        return out

    return kernel


def _softmax_family(fn: Callable[[torch.Tensor, int], torch.Tensor]) -> tuple[Builder, Builder]:
    def legacy(spec: NodeSpec) -> Kernel:
        axis = spec.attr("axis", 1)

        def kernel(x: torch.Tensor) -> torch.Tensor:
            dim = axis % x.dim() if x.dim() else 0
            flat = x.reshape(math.prod(x.shape[:dim]), -1)
            return fn(flat, 1).reshape(x.shape)

        return kernel

    def modern(spec: NodeSpec) -> Kernel:
        axis = spec.attr("axis", -1)
        return lambda x: fn(x, axis)

    return legacy, modern


def _hardmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    index = x.argmax(dim=dim, keepdim=True)
    return torch.zeros_like(x).scatter_(dim, index, 1.0)


_SOFTMAX_FAMILY: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "Softmax": torch.softmax,
    "LogSoftmax": torch.log_softmax,
    "Hardmax": _hardmax,
}
for _name, _axis_fn in _SOFTMAX_FAMILY.items():
    _legacy, _modern = _softmax_family(_axis_fn)
    register_op(_name, versions=(1, 11))(_legacy)  # input coerced to 2-D at axis (default 1)
    register_op(_name, versions=(13,))(_modern)  # along one axis (default -1)
