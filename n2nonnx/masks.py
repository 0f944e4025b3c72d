"""Mask conventions: how a pruning mask lives in the ONNX graph, shared by every stage.

A pruned weight ``W`` (an initializer) gets a mask initializer ``W/mask`` of the same
shape and dtype holding 0.0 / 1.0, and a ``Mul`` node ``W/apply_mask`` whose output
``W/masked`` replaces ``W`` in every consumer. The stored values of ``W`` are zero where
the mask is zero too, so the model is correct even for a tool that strips the Mul.
Deployment folds the Mul away (``W * mask`` becomes the new ``W``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from n2nonnx.model import Model

MASK_SUFFIX = "/mask"
MASKED_SUFFIX = "/masked"
APPLY_SUFFIX = "/apply_mask"


def mask_name(weight: str) -> str:
    """Name of the mask initializer that gates initializer ``weight``."""
    return weight + MASK_SUFFIX


def masked_name(weight: str) -> str:
    """Name of the tensor ``weight * mask`` that consumers read instead of ``weight``."""
    return weight + MASKED_SUFFIX


def apply_node_name(weight: str) -> str:
    """Name of the Mul node that applies the mask of ``weight``."""
    return weight + APPLY_SUFFIX


def is_mask(name: str) -> bool:
    """True if initializer ``name`` is a mask by the n2nonnx convention."""
    return name.endswith(MASK_SUFFIX)


def weight_of_mask(name: str) -> str:
    """The weight initializer gated by mask ``name``."""
    if not is_mask(name):
        raise ValueError(f"{name!r} is not a mask name (expected suffix {MASK_SUFFIX!r})")
    return name[: -len(MASK_SUFFIX)]


def apply_masks(model: Model, new_masks: Mapping[str, np.ndarray], *, zero_weights: bool = True) -> Model:
    """Gate initializers with masks in the graph; returns a new model.

    A weight that has no mask yet gets a ``W/mask`` initializer and a ``Mul`` node whose
    output replaces ``W`` in every consumer; a weight that has one gets its values
    replaced. Where the mask is 0 the stored weight is set to 0 too (``zero_weights``),
    so the file is right even for a tool that ignores the Mul.

    Args:
        model: the model (not modified).
        new_masks: weight initializer name -> 0/1 array of the weight's shape.
        zero_weights: also zero the pruned entries of the weights themselves.

    Returns:
        The masked model.
    """
    import onnx
    from onnx import helper, numpy_helper

    from n2nonnx.errors import InvalidArgumentError

    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    graph = proto.graph
    initializers = {t.name: t for t in graph.initializer}
    new_nodes = []
    for weight, mask in new_masks.items():
        if weight not in initializers:
            raise InvalidArgumentError(f"cannot mask {weight!r}: the model has no initializer of that name")
        tensor = initializers[weight]
        values = numpy_helper.to_array(tensor)
        mask = np.asarray(mask)
        if mask.shape != values.shape:
            raise InvalidArgumentError(
                f"mask for {weight!r} has shape {mask.shape}, the weight has {values.shape}"
            )
        if not np.isin(mask, (0, 1)).all():
            raise InvalidArgumentError(f"mask for {weight!r} must hold only 0 and 1")
        mask = mask.astype(values.dtype)
        if zero_weights:
            tensor.CopyFrom(numpy_helper.from_array((values * mask).astype(values.dtype), weight))
        name = mask_name(weight)
        if name in initializers:
            initializers[name].CopyFrom(numpy_helper.from_array(mask, name))
            continue
        mask_tensor = numpy_helper.from_array(mask, name)
        graph.initializer.append(mask_tensor)
        initializers[name] = mask_tensor
        for node in graph.node:
            for position, value in enumerate(node.input):
                if value == weight:
                    node.input[position] = masked_name(weight)
        new_nodes.append(helper.make_node("Mul", [weight, name], [masked_name(weight)], name=apply_node_name(weight)))
        graph.value_info.append(
            helper.make_tensor_value_info(masked_name(weight), tensor.data_type, list(tensor.dims))
        )
    if new_nodes:
        nodes = new_nodes + list(graph.node)
        del graph.node[:]
        graph.node.extend(nodes)
    return model.with_proto(proto)


def mask_arrays(model: Model) -> dict[str, np.ndarray]:
    """Weight name -> mask array, for every masked weight of ``model``."""
    return {
        weight_of_mask(name): model.initializer(name)
        for name in model.initializer_names
        if is_mask(name)
    }
