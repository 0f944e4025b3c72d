"""Shape and layout ops.

Reshape, Flatten, Transpose, Concat, Split, Slice, (Un)Squeeze, Expand, Tile, Shape, Size,
Identity, Cast, CastLike, DepthToSpace, SpaceToDepth, Trilu, Compress, NonZero.

Most of these ops gained schema versions that only add element types (bfloat16, float8, 4-bit
and 2-bit integers); a type torch lacks is refused where the tensor is made.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from n2nonnx.backend.ops._util import int_list, static_or_runtime, torch_dtype
from n2nonnx.backend.registry import register_op
from n2nonnx.backend.spec import Builder, Kernel, NodeSpec


@register_op("Identity", versions=(1, 13, 14, 16, 19, 21, 23, 24, 25))
def identity(spec: NodeSpec) -> Kernel:
    """Identity."""
    return lambda x: x


def _reshape_target(shape: list[int], x: torch.Tensor, allowzero: int) -> list[int]:
    if allowzero:
        return shape
    return [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]


@register_op("Reshape", versions=(1,))
def reshape_attr(spec: NodeSpec) -> Kernel:
    """Reshape before opset 5 (``shape`` attribute)."""
    shape = list(spec.attr("shape"))
    return lambda x: x.reshape(_reshape_target(shape, x, 0))


@register_op("Reshape", versions=(5, 13, 14, 19, 21, 23, 24, 25))
def reshape(spec: NodeSpec) -> Kernel:
    """Reshape (0 copies the input dimension unless ``allowzero=1`` (opset 14), -1 is inferred)."""
    allowzero = spec.attr("allowzero", 0)
    shape, dynamic = static_or_runtime(spec, 1)
    if not dynamic:
        if allowzero or 0 not in shape:
            return lambda x, _shape=None: x.reshape(shape)
        return lambda x, _shape=None: x.reshape(_reshape_target(shape, x, 0))
    return lambda x, target: x.reshape(_reshape_target(int_list(target), x, allowzero))


@register_op("Flatten", versions=(1, 9, 11, 13, 21, 23, 24, 25))
def flatten(spec: NodeSpec) -> Kernel:
    """Flatten to 2-D at ``axis`` (default 1)."""
    axis = spec.attr("axis", 1)

    def kernel(x: torch.Tensor) -> torch.Tensor:
        dim = axis % x.dim() if axis < 0 else axis
        return x.reshape(math.prod(x.shape[:dim]), math.prod(x.shape[dim:]))

    return kernel


@register_op("Transpose", versions=(1, 13, 21, 23, 24, 25))
def transpose(spec: NodeSpec) -> Kernel:
    """Transpose by ``perm`` (default: reverse the axes)."""
    perm = spec.attr("perm")
    if perm is None:
        return lambda x: x.permute(*reversed(range(x.dim())))
    perm = list(perm)
    return lambda x: x.permute(perm)


@register_op("Concat", versions=(1, 4, 11, 13))
def concat(spec: NodeSpec) -> Kernel:
    """Concat along ``axis`` (default 1 in opset 1, required since)."""
    axis = spec.attr("axis", 1)
    return lambda *tensors: torch.cat(tensors, axis)


def _split_kernel(
    spec: NodeSpec, sizes: list[int] | None, dynamic: bool, num_outputs: int, ceil_chunks: bool
) -> Kernel:
    axis = spec.attr("axis", 0)

    def kernel(x: torch.Tensor, split: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        chosen = int_list(split) if dynamic else sizes
        if chosen is None:
            length = x.shape[axis]
            chunk = math.ceil(length / num_outputs) if ceil_chunks else length // num_outputs
            return torch.split(x, chunk, axis)
        return torch.split(x, chosen, axis)

    return kernel


@register_op("Split", versions=(1, 2, 11))
def split_attr(spec: NodeSpec) -> Kernel:
    """Split with a ``split`` attribute (or second input in opset 1), else equal parts."""
    sizes, dynamic = static_or_runtime(spec, 1, attr="split")
    return _split_kernel(spec, sizes, dynamic, len(spec.outputs), False)


@register_op("Split", versions=(13,))
def split(spec: NodeSpec) -> Kernel:
    """Split with the sizes as an optional input."""
    sizes, dynamic = static_or_runtime(spec, 1)
    return _split_kernel(spec, sizes, dynamic, len(spec.outputs), False)


@register_op("Split", versions=(18,))
def split_18(spec: NodeSpec) -> Kernel:
    """Split with optional sizes input or ``num_outputs`` (last chunk may be smaller)."""
    sizes, dynamic = static_or_runtime(spec, 1)
    return _split_kernel(spec, sizes, dynamic, spec.attr("num_outputs", len(spec.outputs)), True)


def slice_tensor(
    x: torch.Tensor,
    starts: list[int],
    ends: list[int],
    axes: list[int] | None,
    steps: list[int] | None,
) -> torch.Tensor:
    """ONNX Slice semantics (clamping, negative indices and steps) on a torch tensor."""
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    index: list = [slice(None)] * x.dim()
    flips = []
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        axis = axis % x.dim()
        size = x.shape[axis]
        start = start + size if start < 0 else start
        end = end + size if end < 0 else end
        if step > 0:
            index[axis] = slice(min(max(start, 0), size), min(max(end, 0), size), step)
        else:
            start = min(max(start, 0), size - 1)
            end = min(max(end, -1), size - 1)
            flips.append((axis, torch.arange(start, end, step, device=x.device)))
    out = x[tuple(index)]
    for axis, positions in flips:
        out = out.index_select(axis, positions)
    return out


@register_op("Slice", versions=(1,))
def slice_attr(spec: NodeSpec) -> Kernel:
    """Slice before opset 10 (starts / ends / axes attributes)."""
    starts, ends, axes = spec.attr("starts"), spec.attr("ends"), spec.attr("axes")
    return lambda x: slice_tensor(x, starts, ends, axes, None)


@register_op("Slice", versions=(10, 11, 13))
def slice_op(spec: NodeSpec) -> Kernel:
    """Slice with starts / ends / axes / steps inputs."""
    values = [static_or_runtime(spec, i) for i in range(1, 5)]
    if not any(dynamic for _, dynamic in values):
        starts, ends, axes, steps = (v for v, _ in values)
        return lambda x, *_: slice_tensor(x, starts, ends, axes, steps)

    def kernel(
        x: torch.Tensor,
        starts: torch.Tensor,
        ends: torch.Tensor,
        axes: torch.Tensor | None = None,
        steps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return slice_tensor(
            x,
            int_list(starts),
            int_list(ends),
            None if axes is None else int_list(axes),
            None if steps is None else int_list(steps),
        )

    return kernel


def _squeeze(x: torch.Tensor, axes: list[int] | None) -> torch.Tensor:
    if axes is None or len(axes) == 0:
        return x.squeeze()
    return x.squeeze(tuple(a % x.dim() for a in axes))


def _unsqueeze(x: torch.Tensor, axes: list[int]) -> torch.Tensor:
    rank = x.dim() + len(axes)
    for axis in sorted(a % rank for a in axes):
        x = x.unsqueeze(axis)
    return x


def _axes_op(fn: Callable[[torch.Tensor, Any], torch.Tensor]) -> tuple[Builder, Builder]:
    def legacy(spec: NodeSpec) -> Kernel:
        axes = spec.attr("axes")
        return lambda x: fn(x, axes)

    def modern(spec: NodeSpec) -> Kernel:
        axes, dynamic = static_or_runtime(spec, 1)
        if dynamic:
            return lambda x, axes_t: fn(x, int_list(axes_t))
        return lambda x, *_: fn(x, axes)

    return legacy, modern


for _name, _fn in {"Squeeze": _squeeze, "Unsqueeze": _unsqueeze}.items():
    _legacy, _modern = _axes_op(_fn)
    register_op(_name, versions=(1, 11))(_legacy)  # axes attribute (negative from opset 11)
    register_op(_name, versions=(13, 21, 23, 24, 25))(_modern)  # axes input


@register_op("Expand", versions=(8, 13))
def expand(spec: NodeSpec) -> Kernel:
    """Expand with numpy broadcasting (the target may have lower rank or 1s)."""
    shape, dynamic = static_or_runtime(spec, 1)

    def kernel(x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        wanted = int_list(target) if dynamic else shape
        return torch.broadcast_to(x, torch.broadcast_shapes(x.shape, tuple(wanted)))

    return kernel


@register_op("Tile", versions=(1,))
def tile_1(spec: NodeSpec) -> Kernel:
    """Tile in opset 1: ``tiles`` copies along the one axis given by the ``axis`` input."""

    def kernel(x: torch.Tensor, tiles: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
        repeats = [1] * x.dim()
        repeats[int(axis.reshape(-1)[0])] = int(tiles.reshape(-1)[0])
        return x.repeat(repeats)

    return kernel


@register_op("Tile", versions=(6, 13))
def tile(spec: NodeSpec) -> Kernel:
    """Tile by the ``repeats`` input."""
    repeats, dynamic = static_or_runtime(spec, 1)
    if dynamic:
        return lambda x, reps: x.repeat(int_list(reps))
    return lambda x, *_: x.repeat(repeats)


@register_op("Shape", versions=(1, 13, 15, 19, 21, 23, 24, 25))
def shape(spec: NodeSpec) -> Kernel:
    """Shape as int64 (opset 15 ``start`` / ``end`` select a range)."""
    start, end = spec.attr("start", 0), spec.attr("end")
    return lambda x: torch.tensor(x.shape[start:end], dtype=torch.int64, device=x.device)


@register_op("Size", versions=(1, 13, 19, 21, 23, 24, 25))
def size(spec: NodeSpec) -> Kernel:
    """Number of elements as an int64 scalar."""
    return lambda x: torch.tensor(x.numel(), dtype=torch.int64, device=x.device)


@register_op("Cast", versions=(1, 6, 9, 13, 19, 21, 23, 24, 25, 28))
def cast(spec: NodeSpec) -> Kernel:
    """Cast to the ``to`` element type (a type name before opset 6, an enum since).

    ``saturate`` (opset 19) and ``round_mode`` (24) apply only to float8 targets, which torch lacks.
    """
    target = spec.attr("to")
    dtype = (
        torch_dtype(spec, target)
        if isinstance(target, int)
        else getattr(torch, str(target).lower())
    )

    def kernel(x: torch.Tensor) -> torch.Tensor:
        if x.is_floating_point() and not dtype.is_floating_point and dtype != torch.bool:
            return x.trunc().to(dtype) if x.dtype != dtype else x
        return x.to(dtype)

    return kernel


@register_op("CastLike", versions=(15, 19, 21, 23, 24, 25))
def cast_like(spec: NodeSpec) -> Kernel:
    """Cast to the element type of the second input."""
    return lambda x, like: x.to(like.dtype)


@register_op("DepthToSpace", versions=(1, 11, 13, 28))
def depth_to_space(spec: NodeSpec) -> Kernel:
    """DepthToSpace in DCR (default) or CRD mode (opset 11)."""
    block, mode = spec.attr("blocksize"), spec.attr("mode", "DCR")

    def kernel(x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        depth = c // (block * block)
        if mode == "DCR":
            y = x.reshape(n, block, block, depth, h, w).permute(0, 3, 4, 1, 5, 2)
        else:
            y = x.reshape(n, depth, block, block, h, w).permute(0, 1, 4, 2, 5, 3)
        return y.reshape(n, depth, h * block, w * block)

    return kernel


@register_op("SpaceToDepth", versions=(1, 13, 28))
def space_to_depth(spec: NodeSpec) -> Kernel:
    """SpaceToDepth with ``blocksize`` (DCR order, or CRD when ``mode="CRD"``, opset 28)."""
    block, mode = spec.attr("blocksize"), spec.attr("mode", "DCR")
    order = (0, 3, 5, 1, 2, 4) if mode == "DCR" else (0, 1, 3, 5, 2, 4)

    def kernel(x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        y = x.reshape(n, c, h // block, block, w // block, block).permute(order)
        return y.reshape(n, c * block * block, h // block, w // block)

    return kernel


@register_op("Trilu", versions=(14,))
def trilu(spec: NodeSpec) -> Kernel:
    """Upper (default) or lower triangle with diagonal offset ``k``."""
    upper = spec.attr("upper", 1)

    def kernel(x: torch.Tensor, k: torch.Tensor | None = None) -> torch.Tensor:
        offset = 0 if k is None else int(k.reshape(-1)[0])
        return torch.triu(x, offset) if upper else torch.tril(x, offset)

    return kernel


@register_op("Compress", versions=(9, 11, 28))
def compress(spec: NodeSpec) -> Kernel:
    """Select slices where ``condition`` is true, along ``axis`` or over the flattened input."""
    axis = spec.attr("axis")

    def kernel(x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        positions = torch.nonzero(condition.reshape(-1).bool()).reshape(-1)
        if axis is None:
            return x.reshape(-1).index_select(0, positions)
        return x.index_select(axis, positions)

    return kernel


@register_op("NonZero", versions=(9, 13))
def non_zero(spec: NodeSpec) -> Kernel:
    """Indices of non-zero elements, shape (rank, count)."""
    return lambda x: (
        torch.nonzero(x).t().contiguous() if x.dim() else torch.nonzero(x.reshape(1)).t()[:0]
    )
