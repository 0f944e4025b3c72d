"""Activation functions, Clip, Softmax / LogSoftmax / Hardmax."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from n2nonnx.backend.ops._util import static_or_runtime
from n2nonnx.backend.registry import NodeSpec, register_op

for _name, _fn in {
    "Relu": torch.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Softsign": F.softsign,
    "Mish": F.mish,
}.items():
    register_op(_name)(lambda spec, fn=_fn: fn)


@register_op("Softplus")
def softplus(spec: NodeSpec):
    """Softplus: log(1 + exp(x)), exact for large x."""
    return lambda x: F.softplus(x, threshold=30.0 if x.dtype != torch.float16 else 10.0)


@register_op("HardSwish", since=14)
def hard_swish(spec: NodeSpec):
    """HardSwish: x * clamp(x/6 + 1/2, 0, 1)."""
    return F.hardswish


@register_op("LeakyRelu")
def leaky_relu(spec: NodeSpec):
    """LeakyRelu with slope ``alpha`` (default 0.01)."""
    alpha = spec.attr("alpha", 0.01)
    return lambda x: F.leaky_relu(x, alpha)


@register_op("PRelu")
def prelu(spec: NodeSpec):
    """PRelu with a slope broadcast against the input (any broadcastable shape)."""
    return lambda x, slope: torch.where(x >= 0, x, x * slope)


@register_op("Elu")
def elu(spec: NodeSpec):
    """Elu with ``alpha`` (default 1)."""
    alpha = spec.attr("alpha", 1.0)
    return lambda x: F.elu(x, alpha)


@register_op("Celu", since=12)
def celu(spec: NodeSpec):
    """Celu with ``alpha`` (default 1)."""
    alpha = spec.attr("alpha", 1.0)
    return lambda x: F.celu(x, alpha)


@register_op("Selu")
def selu(spec: NodeSpec):
    """Selu with ``alpha`` and ``gamma``."""
    alpha = spec.attr("alpha", 1.67326319217681884765625)
    gamma = spec.attr("gamma", 1.05070102214813232421875)
    return lambda x: gamma * torch.where(x > 0, x, alpha * torch.expm1(x))


@register_op("HardSigmoid")
def hard_sigmoid(spec: NodeSpec):
    """HardSigmoid: clamp(alpha * x + beta, 0, 1)."""
    alpha, beta = spec.attr("alpha", 0.2), spec.attr("beta", 0.5)
    return lambda x: torch.clamp(x * alpha + beta, 0.0, 1.0)


@register_op("ThresholdedRelu", since=10)
def thresholded_relu(spec: NodeSpec):
    """x where x > alpha, else 0."""
    alpha = spec.attr("alpha", 1.0)
    return lambda x: torch.where(x > alpha, x, torch.zeros_like(x))


@register_op("Shrink", since=9)
def shrink(spec: NodeSpec):
    """Shrink with ``lambd`` and ``bias``."""
    lambd, bias = spec.attr("lambd", 0.5), spec.attr("bias", 0.0)

    def kernel(x: torch.Tensor) -> torch.Tensor:
        zero = torch.zeros_like(x)
        return torch.where(x < -lambd, x + bias, torch.where(x > lambd, x - bias, zero)).to(x.dtype)

    return kernel


@register_op("Gelu", since=20)
def gelu(spec: NodeSpec):
    """Gelu, exact (``approximate="none"``) or tanh approximation."""
    approximate = spec.attr("approximate", "none")
    return lambda x: F.gelu(x, approximate=approximate)


@register_op("Swish", since=24)
def swish(spec: NodeSpec):
    """Swish: x * sigmoid(alpha * x)."""
    alpha = spec.attr("alpha", 1.0)
    return lambda x: x * torch.sigmoid(alpha * x)


@register_op("Clip", since=1)
def clip_attr(spec: NodeSpec):
    """Clip before opset 11: ``min`` / ``max`` attributes."""
    low, high = spec.attr("min", float("-inf")), spec.attr("max", float("inf"))
    return lambda x: torch.clamp(x, low, high)


def _scalar(value) -> float | int:
    return value.reshape(-1)[0].item()


@register_op("Clip", since=11)
def clip(spec: NodeSpec):
    """Clip from opset 11: optional ``min`` / ``max`` inputs."""
    low, low_dynamic = static_or_runtime(spec, 1, convert=_scalar)
    high, high_dynamic = static_or_runtime(spec, 2, convert=_scalar)
    if not low_dynamic and not high_dynamic:
        if low is None and high is None:
            return lambda x, *_: x
        return lambda x, *_: torch.clamp(x, low, high)

    def kernel(x, low_t=None, high_t=None):
        out = x
        if low_t is not None:
            out = torch.maximum(out, low_t.to(x.dtype))
        if high_t is not None:
            out = torch.minimum(out, high_t.to(x.dtype))
        return out

    return kernel


def _softmax_family(fn):
    def legacy(spec: NodeSpec):
        axis = spec.attr("axis", 1)

        def kernel(x: torch.Tensor) -> torch.Tensor:
            dim = axis % x.dim() if x.dim() else 0
            flat = x.reshape(math.prod(x.shape[:dim]), -1)
            return fn(flat, 1).reshape(x.shape)

        return kernel

    def modern(spec: NodeSpec):
        axis = spec.attr("axis", -1)
        return lambda x: fn(x, axis)

    return legacy, modern


def _hardmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    index = x.argmax(dim=dim, keepdim=True)
    return torch.zeros_like(x).scatter_(dim, index, 1.0)


for _name, _fn in {"Softmax": torch.softmax, "LogSoftmax": torch.log_softmax, "Hardmax": _hardmax}.items():
    _legacy, _modern = _softmax_family(_fn)
    register_op(_name, since=1)(_legacy)
    register_op(_name, since=13)(_modern)
