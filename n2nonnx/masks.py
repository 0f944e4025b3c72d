"""Masks on models: gate weights, read the masks back, fold them away at deployment.

The in-graph representation (a bool mask initializer, a Cast and a Mul, all tagged) is
:mod:`n2nonnx.graph.masking`; this module works on :class:`~n2nonnx.model.Model` objects
and returns new ones.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from n2nonnx.errors import InvalidArgumentError
from n2nonnx.graph.masking import find_mask_sites, gate
from n2nonnx.model import Model
from n2nonnx.tags import replace_tensor


def apply_masks(
    model: Model, new_masks: Mapping[str, np.ndarray], *, zero_weights: bool = True
) -> Model:
    """Gate initializers with masks in the graph; returns a new model.

    A weight that has no mask yet gets a mask initializer, a Cast and a ``Mul`` whose output
    replaces the weight in every consumer; a weight that has one gets its values replaced.
    Where the mask is 0 the stored weight is set to 0 too (``zero_weights``), so the file is
    right even for a tool that ignores the Mul.

    Args:
        model: the model (not modified).
        new_masks: weight initializer name -> 0/1 array of the weight's shape.
        zero_weights: also zero the pruned entries of the weights themselves.

    Returns:
        The masked model.

    Raises:
        InvalidArgumentError: an unknown weight, or a mask of the wrong shape or values.
    """
    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    for weight, mask in new_masks.items():
        try:
            gate(proto.graph, weight, mask, zero_weight=zero_weights)
        except KeyError:
            raise InvalidArgumentError(
                f"cannot mask {weight!r}: the model has no initializer of that name"
            ) from None
        except ValueError as error:
            raise InvalidArgumentError(str(error)) from None
    return model.with_proto(proto)


def mask_arrays(model: Model) -> dict[str, np.ndarray]:
    """Weight name -> mask (0/1 in the weight's dtype), for every masked weight of ``model``."""
    found = {}
    for weight, site in find_mask_sites(model.proto.graph).items():
        dtype = model.initializer(weight).dtype
        found[weight] = np.asarray(model.initializer(site.mask)).astype(dtype)
    return found


def fold_masks(model: Model) -> Model:
    """Make every mask permanent: ``W * mask`` becomes ``W``; the masks and their nodes go.

    The counterpart of ``torch.nn.utils.prune.remove``. Consumers of the masked tensor read
    the weight directly afterwards, so the graph computes exactly what it computed before.

    Args:
        model: the model (not modified).

    Returns:
        A new model without mask initializers or mask nodes (the same model if it has none).

    Raises:
        InvalidArgumentError: a masked weight is itself a graph output.
    """
    sites = find_mask_sites(model.proto.graph)
    if not sites:
        return model
    folded = mask_arrays(model)
    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    graph = proto.graph
    renamed = {site.output: weight for weight, site in sites.items()}
    dropped_outputs = set(renamed) | {site.cast for site in sites.values() if site.cast}
    dropped_inits = {site.mask for site in sites.values()}
    if any(output.name in renamed for output in graph.output):
        raise InvalidArgumentError("a masked weight is a graph output; it cannot be folded")
    kept_nodes = [node for node in graph.node if not set(node.output) & dropped_outputs]
    for node in kept_nodes:
        for position, value in enumerate(node.input):
            if value in renamed:
                node.input[position] = renamed[value]
    del graph.node[:]
    graph.node.extend(kept_nodes)
    initializers = [t for t in graph.initializer if t.name not in dropped_inits]
    for tensor in initializers:
        if tensor.name in folded:
            values = numpy_helper.to_array(tensor)
            product = (values * folded[tensor.name]).astype(values.dtype)
            replace_tensor(tensor, numpy_helper.from_array(product, tensor.name))
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    value_infos = [v for v in graph.value_info if v.name not in dropped_outputs]
    del graph.value_info[:]
    graph.value_info.extend(value_infos)
    return model.with_proto(proto)
