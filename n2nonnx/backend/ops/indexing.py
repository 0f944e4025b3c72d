"""Gather / scatter ops: Gather, GatherElements, GatherND, ScatterND, ScatterElements, Scatter, OneHot."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from n2nonnx.backend.registry import register_op
from n2nonnx.backend.spec import Kernel, NodeSpec


def _positive(indices: torch.Tensor, size: int) -> torch.Tensor:
    indices = indices.long()
    return torch.where(indices < 0, indices + size, indices)


@register_op("Gather", versions=(1, 11, 13))
def gather(spec: NodeSpec) -> Kernel:
    """Gather along ``axis`` (an embedding lookup when axis is 0 and the data is 2-D)."""
    axis = spec.attr("axis", 0)

    def kernel(data: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        dim = axis % data.dim()
        index = _positive(indices, data.shape[dim])
        if dim == 0 and data.dim() == 2 and data.is_floating_point():
            return F.embedding(index, data)
        picked = data.index_select(dim, index.reshape(-1))
        return picked.reshape(data.shape[:dim] + index.shape + data.shape[dim + 1 :])

    return kernel


@register_op("GatherElements", versions=(11, 13))
def gather_elements(spec: NodeSpec) -> Kernel:
    """GatherElements (torch.gather) with negative indices allowed."""
    axis = spec.attr("axis", 0)
    return lambda data, indices: torch.gather(data, axis, _positive(indices, data.shape[axis]))


def _nd_index(
    data: torch.Tensor, indices: torch.Tensor, batch_dims: int
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Flattened batch index, per-axis index tuples and the batch-flattened data."""
    depth = indices.shape[-1]
    batch_shape = data.shape[:batch_dims]
    batch = int(torch.tensor(batch_shape).prod()) if batch_dims else 1
    flat_data = data.reshape((batch,) + data.shape[batch_dims:])
    flat_index = indices.long().reshape(batch, -1, depth)
    sizes = torch.tensor(data.shape[batch_dims : batch_dims + depth], device=indices.device)
    flat_index = torch.where(flat_index < 0, flat_index + sizes, flat_index)
    batch_index = (
        torch.arange(batch, device=indices.device)
        .reshape(batch, 1)
        .expand(batch, flat_index.shape[1])
    )
    return flat_data, (batch_index,) + tuple(flat_index.unbind(-1))


@register_op("GatherND", versions=(11, 12, 13))
def gather_nd(spec: NodeSpec) -> Kernel:
    """GatherND with ``batch_dims`` (opset 12; 0 before)."""
    batch_dims = spec.attr("batch_dims", 0)

    def kernel(data: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        flat_data, index = _nd_index(data, indices, batch_dims)
        picked = flat_data[index]
        return picked.reshape(indices.shape[:-1] + data.shape[batch_dims + indices.shape[-1] :])

    return kernel


@register_op("ScatterND", versions=(11, 13, 16, 18))
def scatter_nd(spec: NodeSpec) -> Kernel:
    """ScatterND with reduction none / add / mul (opset 16) / max / min (opset 18)."""
    reduction = spec.attr("reduction", "none")

    def kernel(data: torch.Tensor, indices: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
        out = data.clone()
        flat_data, index = _nd_index(out, indices, 0)
        depth = indices.shape[-1]
        values = updates.reshape((1, -1) + data.shape[depth:])
        if reduction == "none":
            flat_data[index] = values
        elif reduction == "add":
            flat_data.index_put_(index, values, accumulate=True)
        else:
            combine = {"mul": torch.mul, "max": torch.maximum, "min": torch.minimum}[reduction]
            for row in range(values.shape[1]):
                where = tuple(i[:, row] for i in index)
                flat_data[where] = combine(flat_data[where], values[:, row])
        return flat_data.reshape(data.shape)

    return kernel


_REDUCE = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}


@register_op("ScatterElements", versions=(11, 13, 16, 18))
def scatter_elements(spec: NodeSpec) -> Kernel:
    """ScatterElements with reduction none / add / mul (opset 16) / max / min (opset 18)."""
    axis = spec.attr("axis", 0)
    reduction = spec.attr("reduction", "none")

    def kernel(data: torch.Tensor, indices: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
        index = _positive(indices, data.shape[axis])
        if reduction == "none":
            return torch.scatter(data, axis, index, updates)
        return torch.scatter_reduce(
            data, axis, index, updates, _REDUCE[reduction], include_self=True
        )

    return kernel


# Scatter-11 is deprecated (removed from ONNX; the checker and onnxruntime reject it)
register_op("Scatter", versions=(9,))(scatter_elements)


@register_op("OneHot", versions=(9, 11, 28))
def one_hot(spec: NodeSpec) -> Kernel:
    """OneHot(indices, depth, values=[off, on]) along ``axis``; negative indices count from the end (opset 11)."""
    axis = spec.attr("axis", -1)

    def kernel(indices: torch.Tensor, depth: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        classes = int(depth.reshape(-1)[0])
        index = indices.long() if not indices.is_floating_point() else indices.trunc().long()
        index = torch.where(index < 0, index + classes, index)
        dim = axis % (index.dim() + 1)
        shape = [1] * (index.dim() + 1)
        shape[dim] = classes
        hot = index.unsqueeze(dim) == torch.arange(classes, device=index.device).reshape(shape)
        return torch.where(hot, values[1], values[0])

    return kernel
