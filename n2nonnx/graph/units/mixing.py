"""Ops that mix units by construction: products of two activations (attention), Einsum, TopK.

A MatMul of two activations keeps the units of its right operand on the last axis (the
values of attention); whatever arrives from the left operand, or through the others, is
spread over every output position. No unit is removed through them.
"""

from __future__ import annotations

import onnx

from n2nonnx.graph.index import GraphIndex
from n2nonnx.graph.units.table import PRODUCT, Outgoing, Trace, register, unknown_trace


def trace_dynamic_matmul(index: GraphIndex, node: onnx.NodeProto, trace: Trace) -> Outgoing:
    """Units survive on the right operand only (its last axis)."""
    output = node.output[0]
    rank, out_rank = index.rank(trace.tensor), index.rank(output)
    if (
        node.op_type == "MatMul"
        and node.input[1] == trace.tensor
        and rank
        and out_rank
        and trace.axis == rank - 1
    ):
        return [(output, out_rank - 1, trace.unit_map)]
    return [(output, (out_rank - 1) if out_rank else None, None)]


def _matmul_mixes(index: GraphIndex, node: onnx.NodeProto, trace: Trace) -> bool:
    """The right operand's last axis passes as it is; everything else is mixed."""
    rank = index.rank(trace.tensor)
    right_units = node.op_type == "MatMul" and node.input[1] == trace.tensor
    return not (right_units and rank is not None and trace.axis == rank - 1)


register(
    ["MatMul", "Gemm"],
    trace_dynamic_matmul,
    family="mixing",
    data_inputs=(0, 1),
    mixes=_matmul_mixes,
    scale=PRODUCT,
)
register(["Conv", "ConvTranspose"], unknown_trace, family="mixing", mixes=True, scale=PRODUCT)
register("Einsum", unknown_trace, family="mixing", mixes=True, scale=PRODUCT)
register(["TopK", "Attention"], unknown_trace, family="mixing", data_inputs=(0,), mixes=True)
