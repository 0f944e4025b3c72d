"""Element-wise arithmetic, math, comparison and logic ops."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from n2nonnx.backend.ops._util import fixed
from n2nonnx.backend.registry import register_op
from n2nonnx.backend.spec import Builder, Kernel, NodeSpec

# unsigned types most torch CPU kernels lack: computed in int64 and cast back
_WIDE = {torch.uint16, torch.uint32, torch.uint64}


def _widened(fn: Callable[..., torch.Tensor]) -> Kernel:
    def kernel(*tensors: torch.Tensor) -> torch.Tensor:
        if tensors[0].dtype in _WIDE:
            out = fn(*[t.to(torch.int64) for t in tensors])
            return out if out.dtype == torch.bool else out.to(tensors[0].dtype)
        return fn(*tensors)

    return kernel


def _legacy_broadcast(kernel: Kernel) -> Builder:
    """Binary ops before opset 7: ``broadcast=1`` with ``axis`` aligns B with A's axes from ``axis`` on.

    Without ``axis`` B matches A's trailing axes (or A's whole shape), which numpy-style
    broadcasting computes alike; ``consumed_inputs`` is an in-place hint with no effect.
    """

    def build(spec: NodeSpec) -> Kernel:
        axis = spec.attr("axis") if spec.attr("broadcast", 0) else None
        if axis is None:
            return kernel

        def aligned(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            start = axis + a.dim() if axis < 0 else axis
            return kernel(a, b.reshape(tuple(b.shape) + (1,) * (a.dim() - start - b.dim())))

        return aligned

    return build


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


_TRIG = (7, 22)
_HYPERBOLIC = (9, 22)
_MATH = (1, 6, 13)  # opset 6 dropped consumed_inputs, 13 added bfloat16
# op -> (torch function, schema versions); every version change of these only adds types
_UNARY: dict[str, tuple[Callable[..., torch.Tensor], tuple[int, ...]]] = {
    "Abs": (torch.abs, _MATH),
    "Neg": (torch.neg, _MATH),
    "Sqrt": (torch.sqrt, _MATH),
    "Reciprocal": (torch.reciprocal, _MATH),
    "Exp": (torch.exp, _MATH),
    "Log": (torch.log, _MATH),
    "Floor": (torch.floor, _MATH),
    "Ceil": (torch.ceil, _MATH),
    "Erf": (torch.erf, (9, 13)),
    "Round": (torch.round, (11, 22)),
    "Sign": (torch.sign, (9, 13)),
    "IsNaN": (torch.isnan, (9, 13, 20)),
    "Not": (torch.logical_not, (1,)),
    "BitwiseNot": (torch.bitwise_not, (18,)),
    "Sin": (torch.sin, _TRIG),
    "Cos": (torch.cos, _TRIG),
    "Tan": (torch.tan, _TRIG),
    "Asin": (torch.asin, _TRIG),
    "Acos": (torch.acos, _TRIG),
    "Atan": (torch.atan, _TRIG),
    "Sinh": (torch.sinh, _HYPERBOLIC),
    "Cosh": (torch.cosh, _HYPERBOLIC),
    "Asinh": (torch.asinh, _HYPERBOLIC),
    "Acosh": (torch.acosh, _HYPERBOLIC),
    "Atanh": (torch.atanh, _HYPERBOLIC),
}
for _name, (_fn, _versions) in _UNARY.items():
    register_op(_name, versions=_versions)(fixed(_widened(_fn)))

# op -> (torch function, versions with legacy broadcast attributes, numpy-broadcasting versions)
_BINARY: dict[str, tuple[Callable[..., torch.Tensor], tuple[int, ...], tuple[int, ...]]] = {
    "Add": (torch.add, (1, 6), (7, 13, 14)),
    "Sub": (torch.sub, (1, 6), (7, 13, 14)),
    "Mul": (torch.mul, (1, 6), (7, 13, 14)),
    "Div": (_div, (1, 6), (7, 13, 14)),
    "Pow": (_pow, (1,), (7, 12, 13, 15)),
    "Equal": (torch.eq, (1,), (7, 11, 13, 19)),
    "Less": (torch.lt, (1,), (7, 9, 13)),
    "Greater": (torch.gt, (1,), (7, 9, 13)),
    "LessOrEqual": (torch.le, (), (12, 16)),
    "GreaterOrEqual": (torch.ge, (), (12, 16)),
    "And": (torch.logical_and, (1,), (7,)),
    "Or": (torch.logical_or, (1,), (7,)),
    "Xor": (torch.logical_xor, (1,), (7,)),
    "BitwiseAnd": (torch.bitwise_and, (), (18,)),
    "BitwiseOr": (torch.bitwise_or, (), (18,)),
    "BitwiseXor": (torch.bitwise_xor, (), (18,)),
}
for _name, (_fn, _legacy, _modern) in _BINARY.items():
    if _legacy:
        register_op(_name, versions=_legacy)(_legacy_broadcast(_widened(_fn)))
    register_op(_name, versions=_modern)(fixed(_widened(_fn)))


def _variadic(fn: Callable[..., torch.Tensor]) -> Kernel:
    def kernel(*tensors: torch.Tensor) -> torch.Tensor:
        return functools.reduce(fn, tensors)

    return _widened(kernel)


def _maximum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.maximum(a, b)


def _minimum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.minimum(a, b)


# before opset 8 the inputs had one shape, which numpy-style broadcasting also handles
register_op("Sum", versions=(1, 6, 8, 13))(fixed(_variadic(torch.add)))
register_op("Max", versions=(1, 6, 8, 12, 13))(fixed(_variadic(_maximum)))
register_op("Min", versions=(1, 6, 8, 12, 13))(fixed(_variadic(_minimum)))


@register_op("Mean", versions=(1, 6, 8, 13))
def mean(spec: NodeSpec) -> Kernel:
    """Element-wise mean of any number of broadcastable inputs."""
    add = _variadic(torch.add)

    def kernel(*tensors: torch.Tensor) -> torch.Tensor:
        return add(*tensors) / len(tensors)

    return kernel


def _floor_mod(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    out = torch.remainder(a, b)
    if out.is_floating_point():  # a zero result takes the divisor's sign
        out = torch.where(out == 0, torch.copysign(out, b), out)
    return out


@register_op("Mod", versions=(10, 13, 28))
def mod(spec: NodeSpec) -> Kernel:
    """Mod: C-style ``fmod`` when ``fmod=1``, else the sign of the divisor (Python style)."""
    return _widened(torch.fmod if spec.attr("fmod", 0) else _floor_mod)


@register_op("IsInf", versions=(10, 20))
def is_inf(spec: NodeSpec) -> Kernel:
    """IsInf with its detect_negative / detect_positive switches."""
    negative, positive = spec.attr("detect_negative", 1), spec.attr("detect_positive", 1)
    if negative and positive:
        return torch.isinf
    if positive:
        return torch.isposinf
    if negative:
        return torch.isneginf
    return lambda x: torch.zeros_like(x, dtype=torch.bool)


@register_op("BitShift", versions=(11, 28))
def bit_shift(spec: NodeSpec) -> Kernel:
    """BitShift LEFT / RIGHT; right shifts of signed types sign-extend (opset 28).

    A shift that is negative or at least the type's bit width gives what the sign fill
    alone gives: -1 for a right shift of a negative value, else 0.
    """
    left = spec.attr("direction") == "LEFT"

    def kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        wide, shift = x.to(torch.int64), y.to(torch.int64)
        bits = x.element_size() * 8
        in_range = (shift >= 0) & (shift < bits)
        shift = torch.where(in_range, shift, torch.full_like(shift, min(bits, 63)))
        out = wide << shift if left else wide >> shift
        if left:
            out = torch.where(in_range, out, torch.zeros_like(out))
        if bits < 64:
            out = out & ((1 << bits) - 1)
        return out.to(x.dtype)

    return kernel


@register_op("Where", versions=(9, 16))
def where(spec: NodeSpec) -> Kernel:
    """Where(condition, X, Y)."""
    return lambda condition, x, y: torch.where(condition.bool(), x, y)
