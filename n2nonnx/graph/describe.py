"""Recognising one layer: its weight and bias, units and axes, activation chain and sizes."""

from __future__ import annotations

import numpy as np
import onnx

from n2nonnx import tags
from n2nonnx.errors import ShapeError, UnsupportedOpError
from n2nonnx.graph.index import GraphIndex
from n2nonnx.graph.records import CHAIN_OPS, Layer

_GATE_OPS = frozenset({"Sigmoid", "HardSigmoid", "Tanh"})  # x * gate(x): SiLU, hard-swish


def describe_layer(
    index: GraphIndex, node: onnx.NodeProto, name: str, position: int
) -> Layer | None:
    """The :class:`Layer` of ``node``, or None when it has no constant weight.

    Args:
        index: the graph.
        node: a Conv, ConvTranspose, Gemm or MatMul node.
        name: the node's unique name.
        position: the layer's index among the layers found so far.

    Returns:
        The layer, without edges (see :mod:`n2nonnx.graph.wiring`).

    Raises:
        ShapeError: its input has unknown dimensions besides the batch.
        UnsupportedOpError: an op of an unknown domain blocks shape inference upstream.
    """
    placement = _weight_placement(index, node)
    if placement is None:
        return None
    weight, data, unit_axis, in_axis, in_feature_axis, out_feature_axis = placement
    shape = tuple(int(d) for d in index.initializers[weight].dims)
    groups = int(index.attribute(node, "group", 1)) if node.op_type.startswith("Conv") else 1
    if node.op_type == "ConvTranspose":
        units, in_units = shape[1] * groups, shape[0]
    else:
        units = shape[unit_axis]
        in_units = shape[in_axis] * groups
    data_rank = _rank_or_fail(index, data, name)
    out_rank = index.rank(node.output[0]) or data_rank
    in_feature_axis %= data_rank
    out_feature_axis %= out_rank
    bias = None
    if (
        node.op_type in ("Conv", "ConvTranspose")
        and len(node.input) > 2
        and node.input[2]
        or node.op_type == "Gemm"
        and len(node.input) > 2
        and node.input[2]
    ):
        bias = index.weight_initializer(node.input[2])
    preact = node.output[0]
    if bias is None:
        bias, preact = _separate_bias(index, preact, units, out_rank, out_feature_axis)
    chain, output = _follow_chain(index, preact)
    spatial_in = _spatial(index, data, in_feature_axis, name)
    spatial_out = _spatial(index, preact, out_feature_axis, name)
    return Layer(
        name=name,
        op=node.op_type,
        index=position,
        weight=weight,
        bias=bias,
        weight_shape=shape,
        unit_axis=unit_axis,
        in_axis=in_axis,
        units=units,
        in_units=in_units,
        groups=groups,
        fan_in=int(np.prod(shape)) // max(units, 1),
        input=data,
        preact=preact,
        output=output,
        chain=chain,
        in_feature_axis=in_feature_axis,
        out_feature_axis=out_feature_axis,
        spatial_in=spatial_in,
        spatial_out=spatial_out,
        is_skip=tags.role(node) == tags.SKIP,
    )


def _weight_placement(index: GraphIndex, node: onnx.NodeProto):
    """(weight, data input, unit axis, in axis, data feature axis, output feature axis)."""
    inputs = list(node.input)
    if node.op_type in ("Conv", "ConvTranspose"):
        weight = index.weight_initializer(inputs[1])
        if weight is None or index.is_constant(inputs[0]):
            return None
        if node.op_type == "Conv":
            return weight, inputs[0], 0, 1, 1, 1
        return weight, inputs[0], 1, 0, 1, 1
    left, right = (index.weight_initializer(inputs[0]), index.weight_initializer(inputs[1]))
    if node.op_type == "Gemm":
        trans_a = int(index.attribute(node, "transA", 0))
        trans_b = int(index.attribute(node, "transB", 0))
        if right is not None and left is None:
            unit_axis, in_axis = (0, 1) if trans_b else (1, 0)
            return right, inputs[0], unit_axis, in_axis, 0 if trans_a else 1, 1
        if left is not None and right is None:
            unit_axis, in_axis = (1, 0) if trans_a else (0, 1)
            return left, inputs[1], unit_axis, in_axis, 1 if trans_b else 0, 0
        return None
    # MatMul: only 2-D constant weights are layers (batched constant weights are not).
    if right is not None and left is None and len(index.initializers[right].dims) == 2:
        return right, inputs[0], 1, 0, -1, -1
    if left is not None and right is None and len(index.initializers[left].dims) == 2:
        return left, inputs[1], 0, 1, -2, -2
    return None


def _separate_bias(index, preact, units, out_rank, out_feature_axis):
    """An Add of a constant vector right after a bias-less layer is its bias (MatMul + Add)."""
    consumers = index.consumer_nodes(preact)
    if len(consumers) != 1 or preact in index.graph_outputs:
        return None, preact
    add = consumers[0]
    if add.op_type != "Add" or len(add.input) != 2:
        return None, preact
    other = add.input[1] if add.input[0] == preact else add.input[0]
    bias = index.weight_initializer(other)
    if bias is None:
        return None, preact
    shape = [int(d) for d in index.initializers[bias].dims]
    # Must broadcast along the output feature axis only.
    expected = [1] * (out_rank - out_feature_axis - 1)
    trailing = shape[len(shape) - len(expected) - 1 :] if len(shape) > len(expected) else None
    if trailing is None or trailing[0] != units or any(d != 1 for d in trailing[1:]):
        return None, preact
    if any(d != 1 for d in shape[: len(shape) - len(expected) - 1]):
        return None, preact
    return bias, add.output[0]


def _follow_chain(index: GraphIndex, preact: str) -> tuple[tuple[str, ...], str]:
    chain: list[str] = []
    tensor = preact
    while tensor not in index.graph_outputs:
        consumers = index.consumer_nodes(tensor)
        if (
            len(consumers) == 1
            and consumers[0].op_type in CHAIN_OPS
            or len(consumers) == 1
            and _joins_a_skip(index, consumers[0], tensor)
        ):
            node = consumers[0]
        elif len(consumers) == 2:  # x * gate(x)
            gate = [c for c in consumers if c.op_type in _GATE_OPS]
            mul = [c for c in consumers if c.op_type == "Mul"]
            if not (gate and mul and gate[0].output[0] in mul[0].input):
                break
            chain.extend([gate[0].op_type, "Mul"])
            tensor = mul[0].output[0]
            continue
        else:
            break
        if node.input[0] != tensor and node.op_type != "Add":
            break  # e.g. the tensor is a BatchNorm's scale, not its data
        chain.append(node.op_type)
        tensor = node.output[0]
    return tuple(chain), tensor


def _joins_a_skip(index: GraphIndex, node: onnx.NodeProto, tensor: str) -> bool:
    """The tagged Add that brings a skip branch into ``tensor`` (seen from the target's side)."""
    producer = index.producer_node(tensor)
    return tags.role(node) == tags.SKIP_JOIN and (
        producer is None or tags.role(producer) != tags.SKIP
    )


def _rank_or_fail(index: GraphIndex, tensor: str, layer: str) -> int:
    rank = index.rank(tensor)
    if rank is None:
        _blocked_by_custom_op(index, tensor, layer)
        raise ShapeError(
            f"layer {layer!r}: the shape of its input {tensor!r} is unknown; pass the input "
            "shapes (load(..., input_shapes={'x': (1, 3, 32, 32)}) or --input-shape x=1x3x32x32)"
        )
    return rank


def _spatial(index: GraphIndex, tensor: str, feature_axis: int, layer: str) -> tuple[int, ...]:
    """Sizes of ``tensor`` other than its batch and unit axes (H, W; sequence length; ())."""
    shape = index.shape(tensor)
    if shape is None:
        _rank_or_fail(index, tensor, layer)
        return ()
    batch_symbols = index.batch_symbols
    batch_axes = {a for a, d in enumerate(shape) if isinstance(d, str) and d in batch_symbols}
    if not batch_axes:
        batch_axes = {0}
    dims = [d for axis, d in enumerate(shape) if axis != feature_axis and axis not in batch_axes]
    if any(not isinstance(d, int) for d in dims):
        _blocked_by_custom_op(index, tensor, layer)
        raise ShapeError(
            f"layer {layer!r}: tensor {tensor!r} has shape {_fmt(shape)} with unknown sizes "
            "besides the batch; pass the input shapes (load(..., input_shapes={'x': (1, 3, 32, 32)}) "
            "or --input-shape x=1x3x32x32)"
        )
    return tuple(int(d) for d in dims)  # type: ignore[arg-type]


def _blocked_by_custom_op(index: GraphIndex, tensor: str, layer: str) -> None:
    """Raise if a node of a non-standard domain upstream of ``tensor`` hides its shape."""
    from n2nonnx.graph.normalize import STANDARD_DOMAINS

    stack, seen = [tensor], set()
    while stack:
        node = index.producer_node(stack.pop())
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.domain not in STANDARD_DOMAINS:
            raise UnsupportedOpError(
                f"node {node.name or node.op_type!r} (op {node.op_type}, domain {node.domain!r}) "
                f"is not a standard ONNX op; shapes after it are unknown, so layer {layer!r} "
                "cannot be analysed. Export without custom ops, or pass --input-shape and "
                "make sure shape inference knows the op"
            )
        stack.extend(i for i in node.input if i)


def _fmt(shape) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"
