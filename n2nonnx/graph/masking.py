"""How a pruning mask lives in an ONNX graph: find the mask sites, add one.

A masked weight ``W`` keeps its initializer (zero where pruned, so a tool that strips the
mask still computes the right thing) and gains:

- a mask initializer of ``W``'s shape, stored as ``bool`` (one byte per weight, so a masked
  file is about 1.25x the dense one for float32 weights), tagged ``mask``;
- a ``Cast`` of the mask to ``W``'s dtype, tagged ``mask-cast``;
- a ``Mul`` ``W * mask`` whose output replaces ``W`` in every consumer, tagged ``mask-apply``.

onnxruntime folds the Cast and the Mul into one constant when it opens a session, so a mask
costs nothing at inference. Masks written by n2nonnx 0.1 (a float mask fed to the Mul
directly) are read too. Nodes are recognised by their tags (:mod:`n2nonnx.tags`), never by
their names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from n2nonnx import tags


@dataclass(frozen=True)
class MaskSite:
    """One masked weight in a graph.

    Attributes:
        weight: the gated initializer.
        mask: the mask initializer.
        output: the tensor consumers read instead of the weight (``weight * mask``).
        cast: the output of the Cast of a bool mask, or None (float mask).
    """

    weight: str
    mask: str
    output: str
    cast: str | None


def find_mask_sites(graph: onnx.GraphProto) -> dict[str, MaskSite]:
    """Every mask site of ``graph``, keyed by the weight it gates (graph order)."""
    initializers = {t.name: t for t in graph.initializer}
    mask_inits = {t.name for t in tags.tagged(graph.initializer, tags.MASK)}
    casts = {
        n.output[0]: n.input[0]
        for n in tags.tagged(graph.node, tags.MASK_CAST)
        if n.input and n.input[0] in mask_inits
    }
    sites: dict[str, MaskSite] = {}
    for node in tags.tagged(graph.node, tags.MASK_APPLY):
        if len(node.input) != 2 or node.input[0] not in initializers:
            continue
        weight, gate = node.input
        if gate in casts:
            sites[weight] = MaskSite(weight, casts[gate], node.output[0], gate)
        elif gate in mask_inits:
            sites[weight] = MaskSite(weight, gate, node.output[0], None)
    return sites


def mask_initializer_names(graph: onnx.GraphProto) -> set[str]:
    """Names of the mask initializers of ``graph``."""
    return {site.mask for site in find_mask_sites(graph).values()}


def gate(
    graph: onnx.GraphProto, weight: str, mask: np.ndarray, *, zero_weight: bool = True
) -> MaskSite:
    """Gate initializer ``weight`` by ``mask`` in ``graph`` (in place); replaces an old mask.

    Args:
        graph: the graph to edit.
        weight: name of a floating-point initializer.
        mask: 0/1 (or bool) array of the weight's shape.
        zero_weight: also set the pruned entries of the stored weight to zero.

    Returns:
        The (new or updated) site.

    Raises:
        KeyError: no initializer named ``weight``.
        ValueError: the mask's shape differs from the weight's, or it holds other values.
    """
    initializers = {t.name: t for t in graph.initializer}
    if weight not in initializers:
        raise KeyError(weight)
    tensor = initializers[weight]
    values = numpy_helper.to_array(tensor)
    mask = np.asarray(mask)
    if mask.shape != values.shape:
        raise ValueError(
            f"mask for {weight!r} has shape {mask.shape}, the weight has {values.shape}"
        )
    if mask.dtype != np.bool_ and not np.isin(mask, (0, 1)).all():
        raise ValueError(f"mask for {weight!r} must hold only 0 and 1")
    if any(output.name == weight for output in graph.output):
        raise ValueError(f"weight {weight!r} is a graph output; it cannot be masked")
    keep = mask.astype(np.bool_)
    if zero_weight:
        tags.replace_tensor(
            tensor, numpy_helper.from_array(np.where(keep, values, 0).astype(values.dtype), weight)
        )
    site = find_mask_sites(graph).get(weight)
    if site is not None:
        old = initializers[site.mask]
        stored = keep if site.cast is not None else keep.astype(values.dtype)
        tags.replace_tensor(old, numpy_helper.from_array(stored, site.mask))
        return site
    taken = _names(graph)
    mask_name = _unique(f"{weight}/mask", taken)
    cast_out = _unique(f"{weight}/mask_as_{values.dtype}", taken)
    output = _unique(f"{weight}/masked", taken)
    mask_tensor = numpy_helper.from_array(keep, mask_name)
    tags.tag(mask_tensor, tags.MASK)
    graph.initializer.append(mask_tensor)
    for node in graph.node:
        for position, value in enumerate(node.input):
            if value == weight:
                node.input[position] = output
    cast = helper.make_node(
        "Cast",
        [mask_name],
        [cast_out],
        name=_unique(f"{weight}/mask_cast", taken),
        to=tensor.data_type,
    )
    apply = helper.make_node(
        "Mul", [weight, cast_out], [output], name=_unique(f"{weight}/apply_mask", taken)
    )
    tags.tag(cast, tags.MASK_CAST)
    tags.tag(apply, tags.MASK_APPLY)
    nodes = [cast, apply, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.value_info.append(
        helper.make_tensor_value_info(output, tensor.data_type, list(tensor.dims))
    )
    return MaskSite(weight, mask_name, output, cast_out)


def _names(graph: onnx.GraphProto) -> set[str]:
    names = {t.name for t in graph.initializer} | {i.name for i in graph.input}
    for node in graph.node:
        names.add(node.name)
        names.update(node.output)
    return names


def _unique(name: str, taken: set[str]) -> str:
    candidate, count = name, 1
    while candidate in taken:
        count += 1
        candidate = f"{name}#{count}"
    taken.add(candidate)
    return candidate
