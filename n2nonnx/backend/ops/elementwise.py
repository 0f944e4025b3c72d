"""Element-wise arithmetic, math, comparison and logic ops."""

from __future__ import annotations

import functools

import torch

from n2nonnx.backend.registry import NodeSpec, register_op

# unsigned types most torch CPU kernels lack: computed in int64 and cast back
_WIDE = {torch.uint16, torch.uint32, torch.uint64}


def _widened(fn):
    def kernel(*tensors: torch.Tensor) -> torch.Tensor:
        if tensors[0].dtype in _WIDE:
            out = fn(*[t.to(torch.int64) for t in tensors])
            return out if out.dtype == torch.bool else out.to(tensors[0].dtype)
        return fn(*tensors)

    return kernel


def _unary(op_type: str, fn, since: int = 1) -> None:
    kernel = _widened(fn)
    register_op(op_type, since=since)(lambda spec: kernel)


def _binary(op_type: str, fn, since: int = 1) -> None:
    kernel = _widened(fn)
    register_op(op_type, since=since)(lambda spec: kernel)


def _div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.is_floating_point():
        return a / b
    return torch.div(a, b, rounding_mode="trunc")


def _pow(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.is_floating_point() and b.dtype == a.dtype:
        return a.pow(b)
    if not a.is_floating_point() and b.is_floating_point():
        return torch.pow(a.double(), b.double()).to(a.dtype)
    return torch.pow(a, b.to(a.dtype) if b.is_floating_point() else b).to(a.dtype)


for _name, _fn in {
    "Abs": torch.abs, "Neg": torch.neg, "Sqrt": torch.sqrt, "Reciprocal": torch.reciprocal,
    "Exp": torch.exp, "Log": torch.log, "Erf": torch.erf, "Floor": torch.floor, "Ceil": torch.ceil,
    "Round": torch.round, "Sign": torch.sign, "IsNaN": torch.isnan, "Not": torch.logical_not,
    "Sin": torch.sin, "Cos": torch.cos, "Tan": torch.tan, "Asin": torch.asin, "Acos": torch.acos,
    "Atan": torch.atan, "Sinh": torch.sinh, "Cosh": torch.cosh, "Asinh": torch.asinh,
    "Acosh": torch.acosh, "Atanh": torch.atanh, "BitwiseNot": torch.bitwise_not,
}.items():
    _unary(_name, _fn)

for _name, _fn in {
    "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": _div, "Pow": _pow,
    "Equal": torch.eq, "Less": torch.lt, "LessOrEqual": torch.le, "Greater": torch.gt,
    "GreaterOrEqual": torch.ge, "And": torch.logical_and, "Or": torch.logical_or,
    "Xor": torch.logical_xor, "BitwiseAnd": torch.bitwise_and, "BitwiseOr": torch.bitwise_or,
    "BitwiseXor": torch.bitwise_xor,
}.items():
    _binary(_name, _fn)


def _variadic(fn):
    def kernel(*tensors: torch.Tensor) -> torch.Tensor:
        return functools.reduce(fn, tensors)

    return _widened(kernel)


def _maximum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.maximum(a, b)


def _minimum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.minimum(a, b)


register_op("Sum")(lambda spec: _variadic(torch.add))
register_op("Max")(lambda spec: _variadic(_maximum))
register_op("Min")(lambda spec: _variadic(_minimum))


@register_op("Mean")
def mean(spec: NodeSpec):
    """Element-wise mean of any number of broadcastable inputs."""
    add = _variadic(torch.add)

    def kernel(*tensors: torch.Tensor) -> torch.Tensor:
        return add(*tensors) / len(tensors)

    return kernel


@register_op("Mod", since=10)
def mod(spec: NodeSpec):
    """Mod: C-style ``fmod`` when ``fmod=1``, else the sign of the divisor (Python style)."""
    return _widened(torch.fmod if spec.attr("fmod", 0) else torch.remainder)


@register_op("IsInf", since=10)
def is_inf(spec: NodeSpec):
    """IsInf with its detect_negative / detect_positive switches."""
    negative, positive = spec.attr("detect_negative", 1), spec.attr("detect_positive", 1)
    if negative and positive:
        return torch.isinf
    if positive:
        return torch.isposinf
    if negative:
        return torch.isneginf
    return lambda x: torch.zeros_like(x, dtype=torch.bool)


@register_op("BitShift", since=11)
def bit_shift(spec: NodeSpec):
    """BitShift LEFT / RIGHT on unsigned integers."""
    left = spec.attr("direction") == "LEFT"

    def kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        wide, shift = x.to(torch.int64), y.to(torch.int64)
        bits = x.element_size() * 8
        out = wide << shift if left else wide >> shift
        if bits < 64:
            out = out & ((1 << bits) - 1)
        return out.to(x.dtype)

    return kernel


@register_op("Where", since=9)
def where(spec: NodeSpec):
    """Where(condition, X, Y)."""
    return lambda condition, x, y: torch.where(condition.bool(), x, y)


