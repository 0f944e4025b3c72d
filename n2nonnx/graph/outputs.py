"""Which graph output holds the class scores, and the graph cut down to it.

Exporters do not all put the scores first: skl2onnx lists ``label`` (int64, one per
sample) before ``probabilities``; detection and multi-head models have several outputs.
Training and data-driven scoring need the scores: the first floating-point output with a
class axis (rank >= 2), else the first floating-point output, else the first output.
:func:`scores_only` keeps that output and the nodes it depends on, so ops on other
branches (a label lookup in ``ai.onnx.ml``) need no kernel. :func:`output_kind` says
whether those scores are logits, probabilities (a final Softmax) or log-probabilities, so
that training and data-driven scoring apply the right loss.
"""

from __future__ import annotations

import onnx

_FLOATS = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.BFLOAT16,
}


def class_score_output(proto: onnx.ModelProto) -> str:
    """The name of the graph output holding class scores.

    Args:
        proto: the model.

    Returns:
        The first floating-point output of rank >= 2 (or of unknown rank), else the first
        floating-point output, else the first output.
    """
    outputs = list(proto.graph.output)
    floating = [o for o in outputs if o.type.tensor_type.elem_type in _FLOATS]
    for output in floating:
        shape = output.type.tensor_type
        if not shape.HasField("shape") or len(shape.shape.dim) >= 2:
            return output.name
    return (floating or outputs)[0].name


def output_kind(proto: onnx.ModelProto) -> str:
    """What the class-score output (:func:`class_score_output`) holds.

    Args:
        proto: the model.

    Returns:
        ``"logits"``, ``"probabilities"`` (a final Softmax, common in Keras exports;
        skl2onnx's Softmax -> Identity) or ``"log_probabilities"`` (a final LogSoftmax).
    """
    name = class_score_output(proto)
    producers = {out: node for node in proto.graph.node for out in node.output}
    while name in producers and producers[name].op_type == "Identity":
        name = producers[name].input[0]
    node = producers.get(name)
    if node is None:
        return "logits"
    return {"Softmax": "probabilities", "LogSoftmax": "log_probabilities"}.get(
        node.op_type, "logits"
    )


def scores_only(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` with the class-score output alone and only the nodes it depends on.

    Initializers, inputs and node names are kept (a module built from the result writes
    back into the full model by initializer name). The model itself is returned when it
    has one output already.

    Args:
        proto: the model (not modified).

    Returns:
        The cut-down model, or ``proto``.
    """
    graph = proto.graph
    if len(graph.output) <= 1:
        return proto
    name = class_score_output(proto)
    producers = {
        out: position for position, node in enumerate(graph.node) for out in node.output if out
    }
    needed: set[int] = set()
    stack = [name]
    while stack:
        position = producers.get(stack.pop())
        if position is None or position in needed:
            continue
        needed.add(position)
        node = graph.node[position]
        stack.extend(i for i in node.input if i)
        for attribute in node.attribute:  # subgraphs read outer-scope tensors by name
            for sub in [attribute.g, *attribute.graphs]:
                stack.extend(i for n in sub.node for i in n.input if i)
    cut = onnx.ModelProto()
    cut.CopyFrom(proto)
    kept_nodes = [node for position, node in enumerate(graph.node) if position in needed]
    del cut.graph.node[:]
    cut.graph.node.extend(kept_nodes)
    chosen = [o for o in graph.output if o.name == name]
    del cut.graph.output[:]
    cut.graph.output.extend(chosen)
    return cut
