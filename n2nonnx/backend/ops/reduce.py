"""Reductions (Reduce*), ArgMax / ArgMin, CumSum, TopK."""

from __future__ import annotations

from collections.abc import Callable

import torch

from n2nonnx.backend.ops._util import int_list, static_or_runtime
from n2nonnx.backend.registry import register_op
from n2nonnx.backend.spec import Builder, Kernel, NodeSpec


def _prod(x: torch.Tensor, dims: tuple[int, ...], keepdim: bool) -> torch.Tensor:
    for dim in sorted(dims, reverse=True):
        x = torch.prod(x, dim, keepdim=keepdim)
    return x


Reducer = Callable[[torch.Tensor, tuple[int, ...], bool], torch.Tensor]


def _extreme(fn: Reducer, empty_value: float) -> Reducer:
    def reduce(x: torch.Tensor, dims: tuple[int, ...], keepdim: bool) -> torch.Tensor:
        if x.numel() == 0:
            shape = [1 if d in dims else s for d, s in enumerate(x.shape)]
            if not keepdim:
                shape = [s for d, s in enumerate(x.shape) if d not in dims]
            if x.dtype == torch.bool:
                return torch.full(shape, empty_value > 0, dtype=x.dtype, device=x.device)
            fill = (
                empty_value
                if x.is_floating_point()
                else (torch.iinfo(x.dtype).min if empty_value < 0 else torch.iinfo(x.dtype).max)
            )
            return torch.full(shape, fill, dtype=x.dtype, device=x.device)
        return fn(x, dims, keepdim)

    return reduce


_REDUCERS: dict[str, Reducer] = {
    "ReduceSum": lambda x, d, k: torch.sum(x, d, keepdim=k),
    "ReduceMean": lambda x, d, k: torch.mean(x, d, keepdim=k),
    "ReduceProd": _prod,
    "ReduceMax": _extreme(lambda x, d, k: torch.amax(x, d, keepdim=k), float("-inf")),
    "ReduceMin": _extreme(lambda x, d, k: torch.amin(x, d, keepdim=k), float("inf")),
    "ReduceL1": lambda x, d, k: torch.sum(x.abs(), d, keepdim=k),
    "ReduceL2": lambda x, d, k: torch.sqrt(torch.sum(x * x, d, keepdim=k)),
    "ReduceSumSquare": lambda x, d, k: torch.sum(x * x, d, keepdim=k),
    "ReduceLogSum": lambda x, d, k: torch.log(torch.sum(x, d, keepdim=k)),
    "ReduceLogSumExp": lambda x, d, k: (
        torch.logsumexp(x, d, keepdim=k)
        if x.numel()
        else torch.log(torch.sum(torch.exp(x), d, keepdim=k))
    ),
}
# op -> (schema versions with an ``axes`` attribute, versions with an ``axes`` input); opset 11
# allowed negative axes, the other changes only add element types
_VERSIONS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    name: ((1, 11, 13), (18,)) for name in _REDUCERS
} | {
    "ReduceSum": ((1, 11), (13,)),
    "ReduceMax": ((1, 11, 12, 13), (18, 20)),
    "ReduceMin": ((1, 11, 12, 13), (18, 20)),
    "ReduceLogSum": ((1, 11, 13), (18, 28)),
    "ReduceLogSumExp": ((1, 11, 13), (18, 28)),
}


def _reduce_builder(reducer: Reducer, axes_as_input: bool) -> Builder:
    def build(spec: NodeSpec) -> Kernel:
        keepdim = bool(spec.attr("keepdims", 1))
        noop = bool(spec.attr("noop_with_empty_axes", 0))
        if axes_as_input:
            axes, dynamic = static_or_runtime(spec, 1)
        else:
            axes, dynamic = spec.attr("axes"), False

        def run(x: torch.Tensor, chosen: list[int] | None) -> torch.Tensor:
            if not chosen:
                if noop:
                    return x
                dims = tuple(range(x.dim()))
            else:
                dims = tuple(sorted(a % x.dim() for a in chosen)) if x.dim() else ()
            if not dims:
                return (
                    reducer(x.reshape(1), (0,), False).reshape(())
                    if x.dim() == 0
                    else reducer(x, dims, keepdim)
                )
            result = reducer(x, dims, keepdim)
            return (
                result.to(x.dtype)
                if not x.is_floating_point() and result.dtype != x.dtype
                else result
            )

        if dynamic:
            return lambda x, axes_t=None: run(x, None if axes_t is None else int_list(axes_t))
        return lambda x, *_: run(x, axes)

    return build


for _name, _reducer in _REDUCERS.items():
    _attribute_versions, _input_versions = _VERSIONS[_name]
    register_op(_name, versions=_attribute_versions)(_reduce_builder(_reducer, False))
    register_op(_name, versions=_input_versions)(_reduce_builder(_reducer, True))


def _arg(fn: Callable[[torch.Tensor, int, bool], torch.Tensor]) -> Builder:
    def build(spec: NodeSpec) -> Kernel:
        axis, keepdim = spec.attr("axis", 0), bool(spec.attr("keepdims", 1))
        last = bool(spec.attr("select_last_index", 0))

        def kernel(x: torch.Tensor) -> torch.Tensor:
            if last:
                size = x.shape[axis]
                return size - 1 - fn(torch.flip(x, (axis,)), axis, keepdim)
            return fn(x, axis, keepdim)

        return kernel

    return build


# opset 11 allowed a negative axis, 12 added select_last_index (default 0), 13 bfloat16
register_op("ArgMax", versions=(1, 11, 12, 13))(_arg(lambda x, a, k: torch.argmax(x, a, keepdim=k)))
register_op("ArgMin", versions=(1, 11, 12, 13))(_arg(lambda x, a, k: torch.argmin(x, a, keepdim=k)))


def _cumulative(accumulate: Callable[[torch.Tensor, int], torch.Tensor], identity: int) -> Builder:
    def build(spec: NodeSpec) -> Kernel:
        exclusive, reverse = spec.attr("exclusive", 0), spec.attr("reverse", 0)

        def kernel(x: torch.Tensor, axis_t: torch.Tensor) -> torch.Tensor:
            axis = int(axis_t.reshape(-1)[0]) % x.dim()
            y = torch.flip(x, (axis,)) if reverse else x
            if exclusive:
                # shift by one along the axis, filling with the identity element
                y = torch.cat(
                    [
                        torch.full_like(y.narrow(axis, 0, 1), identity),
                        y.narrow(axis, 0, y.shape[axis] - 1),
                    ],
                    axis,
                )
            out = accumulate(y, axis).to(x.dtype)
            return torch.flip(out, (axis,)) if reverse else out

        return kernel

    return build


register_op("CumSum", versions=(11, 14))(_cumulative(torch.cumsum, 0))
register_op("CumProd", versions=(26,))(_cumulative(torch.cumprod, 1))


def _topk(
    largest: bool, sort: bool, axis: int
) -> Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]:
    def run(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        values, indices = torch.sort(x, dim=axis, descending=largest, stable=True)
        return values.narrow(axis, 0, k), indices.narrow(axis, 0, k)

    return run


@register_op("TopK", versions=(1,))
def topk_attr(spec: NodeSpec) -> Kernel:
    """TopK before opset 10 (``k`` attribute)."""
    run = _topk(True, True, spec.attr("axis", -1))
    k = spec.attr("k")
    return lambda x: run(x, k)


@register_op("TopK", versions=(10, 11, 24))
def topk(spec: NodeSpec) -> Kernel:
    """TopK with ``k`` input; ``largest`` / ``sorted`` from opset 11; ties keep the lower index first."""
    run = _topk(bool(spec.attr("largest", 1)), bool(spec.attr("sorted", 1)), spec.attr("axis", -1))
    return lambda x, k: run(x, int(k.reshape(-1)[0]))
