"""N2NSkip subgraphs: the ONNX nodes of one skip branch and its Add into the target.

Per pair (paper eq. 2, ``a_{l+k} = g(z_{l+k} + g(S * a_l))``)::

    a_l -> [MaxPool / AveragePool to the target's size | GlobalAveragePool for conv -> FC]
        -> Gather(axis 1, used source units) -> [Flatten] -> Conv / MatMul (weight S, masked)
        -> g (the target's activation) -> Sum over the target's pairs -> Add into z_{l+k}

``z_{l+k}`` is what the target's nonlinearity reads (:func:`join_tensor`): after its
BatchNorm where it has one, as in the authors' code, whose skip path ends in its own
BatchNorm and is added before the ReLU. This also lets onnxruntime keep folding the
BatchNorm into the conv and fuse the Add into the conv's sum + activation (an Add before
the BatchNorm blocks both and measured slower); ``join="preact"`` adds into the raw
layer output instead. The Add takes over every consumer of the joined tensor (and its
graph-output name where it is a graph output).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from n2nonnx import tags
from n2nonnx.graph.index import GraphIndex
from n2nonnx.graph.layers import Layer
from n2nonnx.skip.budget import Connections
from n2nonnx.skip.candidates import Pair

# Activations with g(0) = 0: a zero skip weight then adds exactly nothing.
ZERO_AT_ZERO = frozenset(
    {
        "Relu",
        "LeakyRelu",
        "Tanh",
        "Elu",
        "Selu",
        "Celu",
        "Gelu",
        "Mish",
        "HardSwish",
        "Softsign",
        "Clip",
    }
)


@dataclass(frozen=True)
class Branch:
    """One pair with its sampled connections and initial skip weight (canonical layout)."""

    pair: Pair
    connections: Connections
    weight: np.ndarray  # (target units, used sources, *kernel), already masked


def activation_node(index: GraphIndex, target: Layer) -> onnx.NodeProto | None:
    """The first activation node of the target's chain with g(0) = 0.

    Args:
        index: the graph.
        target: the layer whose chain is searched.

    Returns:
        The node, or None where there is none (a Relu, or the identity for a target
        without a nonlinearity).
    """
    tensor = target.preact
    for _ in target.chain:
        consumers = index.consumer_nodes(tensor)
        if len(consumers) != 1:
            return None
        node = consumers[0]
        if node.op_type in ZERO_AT_ZERO:
            return node
        tensor = node.output[0]
    return None


NORMALISATION_OPS = frozenset(
    {"BatchNormalization", "InstanceNormalization", "Dropout", "Identity"}
)


def join_tensor(index: GraphIndex, target: Layer, join: str = "activation") -> str:
    """The tensor of the target's chain that the skip branch is added to.

    ``"activation"``: the input of the target's nonlinearity, i.e. after its BatchNorm (the
    ``z`` that ``g`` reads in eq. 2; the chain's end when it has no nonlinearity).
    ``"preact"``: the layer's raw output ``W * a + b``, before any normalisation.
    """
    if join == "preact":
        return target.preact
    tensor = target.preact
    for _ in target.chain:
        consumers = index.consumer_nodes(tensor)
        if len(consumers) != 1 or consumers[0].op_type not in NORMALISATION_OPS:
            return tensor
        tensor = consumers[0].output[0]
    return tensor


@dataclass(frozen=True)
class Built:
    """What :func:`add_branches` wrote for one pair.

    Attributes:
        weight: the skip weight initializer holding the pair's connections.
        inputs: ``(start, stop)`` of the pair's source units along that weight's input axis.
        activation: the activation op of the branch.
    """

    weight: str
    inputs: tuple[int, int]
    activation: str


def add_branches(
    proto: onnx.ModelProto,
    index: GraphIndex,
    branches: list[Branch],
    join: str = "activation",
    merge: str = "target",
) -> tuple[dict[str, Built], dict[str, np.ndarray]]:
    """Add the skip subgraphs of ``branches`` to ``proto`` in place.

    Args:
        proto: the model to edit (a copy of the one ``index`` describes).
        index: the index of the unedited model.
        branches: the pairs to build, ordered by target.
        join: where the branch is added (see :func:`join_tensor`).
        merge: ``"target"``: the pairs into one target share one skip layer over their
            concatenated (gathered, aligned) sources, ``a = g(z + g(S [a_l1; a_l2; ...]))``;
            ``"pair"``: one skip layer per pair, summed (eq. 2 applied per pair).

    Returns:
        ``(built, masks)``: per pair (keyed by ``Pair.base_name``) where its weights
        live, and the mask of every skip weight in its stored layout.
    """
    graph = proto.graph
    new_nodes: list[onnx.NodeProto] = []
    groups: dict[str, list[Branch]] = {}
    for branch in branches:
        groups.setdefault(branch.pair.target.name, []).append(branch)
    built: dict[str, Built] = {}
    skip_masks: dict[str, np.ndarray] = {}
    renamed: dict[str, str] = {}
    joins = {join_tensor(index, group[0].pair.target, join) for group in groups.values()}
    pools = Pools(index, protected=joins)  # a pooling of a joined tensor would see the skips
    for name, group in groups.items():
        target = group[0].pair.target
        parts = [group] if merge == "target" or len(group) == 1 else [[b] for b in group]
        outputs = []
        for part in parts:
            base = part[0].pair.base_name if len(part) == 1 else f"n2nskip/{name}"
            output, weight, mask, op = _layer(graph, index, part, base, new_nodes, pools)
            outputs.append(output)
            skip_masks[weight] = mask
            offset = 0
            for branch in part:
                width = len(branch.connections.used_sources)
                built[branch.pair.base_name] = Built(weight, (offset, offset + width), op)
                offset += width
        total = outputs[0]
        if len(outputs) > 1:
            total = f"n2nskip/{name}/total"
            new_nodes.append(helper.make_node("Sum", outputs, [total], name=f"n2nskip/{name}/sum"))
        preact = join_tensor(index, target, join)
        joined = f"{preact}+n2nskip"
        if preact in index.graph_outputs:
            joined, preact = preact, f"{preact}/before_n2nskip"
            renamed[joined] = preact
        else:
            _replace_input(graph, preact, joined)
        join_node = helper.make_node("Add", [preact, total], [joined], name=f"n2nskip/{name}/add")
        tags.tag(join_node, tags.SKIP_JOIN)
        new_nodes.append(join_node)
    for node in new_nodes:
        if tags.role(node) is None:
            tags.tag(node, tags.SKIP)
    for node in graph.node:
        for position, out in enumerate(node.output):
            if out in renamed:
                node.output[position] = renamed[out]
    nodes = _toposort(
        list(graph.node) + new_nodes,
        {i.name for i in graph.input} | {t.name for t in graph.initializer},
    )
    del graph.node[:]
    graph.node.extend(nodes)
    return built, skip_masks


class Pools:
    """Pooled versions of source tensors, shared between branches and with the network.

    Non-overlapping max / average pooling composes (a 4x4 window is a 2x2 window of a 2x2
    window), so a branch pools from the largest pooled copy of its source that already
    exists: the network's own pooling of that tensor where it has one, or another
    branch's. The runtime then reads each full-size activation at most once for pooling.
    """

    def __init__(self, index: GraphIndex, protected: set[str]) -> None:
        self.known: dict[tuple[str, str], dict[tuple[int, ...], str]] = {}
        for node in index.nodes:
            if (
                node.op_type not in ("MaxPool", "AveragePool", "GlobalAveragePool")
                or node.input[0] in protected
            ):
                continue
            if node.op_type == "GlobalAveragePool":
                self.known.setdefault((node.input[0], "GlobalAveragePool"), {})[()] = node.output[0]
                continue
            window = tuple(index.attribute(node, "kernel_shape", ()))
            plain = (
                tuple(index.attribute(node, "strides", ())) == window
                and not any(index.attribute(node, "pads", ()) or ())
                and index.attribute(node, "auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
                and not index.attribute(node, "ceil_mode", 0)
                and all(d == 1 for d in index.attribute(node, "dilations", ()) or ())
                and (len(node.output) == 1 or not node.output[1])
                and (node.op_type == "MaxPool" or not index.attribute(node, "count_include_pad", 0))
            )
            if plain and window:
                self.known.setdefault((node.input[0], node.op_type), {})[window] = node.output[0]

    def pooled(
        self, tensor: str, op: str, window: tuple[int, ...], base: str, nodes: list[onnx.NodeProto]
    ) -> str:
        """``tensor`` pooled by ``op`` over ``window`` (``()`` for GlobalAveragePool)."""
        have = self.known.setdefault((tensor, op), {})
        if window in have:
            return have[window]
        output = f"{base}/pooled" if op != "GlobalAveragePool" else f"{base}/averaged"
        if op == "GlobalAveragePool":
            nodes.append(helper.make_node(op, [tensor], [output], name=f"{base}/global_pool"))
        else:
            divisors = [
                w
                for w in have
                if len(w) == len(window) and all(b % a == 0 for a, b in zip(w, window, strict=True))
            ]
            start, step = tensor, window
            if divisors:
                best = max(divisors, key=lambda w: int(np.prod(w)))
                start, step = have[best], tuple(b // a for a, b in zip(best, window, strict=True))
            nodes.append(
                helper.make_node(
                    op,
                    [start],
                    [output],
                    name=f"{base}/pool",
                    kernel_shape=list(step),
                    strides=list(step),
                )
            )
        have[window] = output
        return output


def _aligned_source(
    graph: onnx.GraphProto, branch: Branch, nodes: list[onnx.NodeProto], pools: Pools
) -> str:
    """Align the source with the target (pooling, GAP), then gather the used units.

    Pooling acts per channel, so it commutes with the Gather; pooling first keeps the
    runtime's blocked conv layout up to a smaller tensor, and poolings are shared (see
    :class:`Pools`).
    """
    pair, connections = branch.pair, branch.connections
    base = pair.base_name
    tensor = pair.source.tensor
    if pair.kind == "conv" and pair.pool:
        op = "MaxPool" if pair.alignment.startswith("max") else "AveragePool"
        tensor = pools.pooled(tensor, op, tuple(pair.pool), base, nodes)
    if pair.kind == "conv->fc":
        tensor = pools.pooled(tensor, "GlobalAveragePool", (), base, nodes)
    indices = f"{base}/source_units"
    graph.initializer.append(
        numpy_helper.from_array(connections.used_sources.astype(np.int64), indices)
    )
    gathered = f"{base}/gathered"
    nodes.append(
        helper.make_node("Gather", [tensor, indices], [gathered], name=f"{base}/gather", axis=1)
    )
    if pair.kind == "conv->fc":
        nodes.append(
            helper.make_node(
                "Flatten", [gathered], [f"{base}/flat"], name=f"{base}/flatten", axis=1
            )
        )
        return f"{base}/flat"
    return gathered


def _layer(
    graph: onnx.GraphProto,
    index: GraphIndex,
    part: list[Branch],
    base: str,
    nodes: list[onnx.NodeProto],
    pools: Pools,
) -> tuple[str, str, np.ndarray, str]:
    """One skip layer over the aligned sources of ``part``: (output, weight, mask, activation)."""
    inputs = [_aligned_source(graph, branch, nodes, pools) for branch in part]
    tensor = inputs[0]
    if len(inputs) > 1:
        tensor = f"{base}/inputs"
        nodes.append(helper.make_node("Concat", inputs, [tensor], name=f"{base}/concat", axis=1))
    weight = np.concatenate([branch.weight for branch in part], axis=1).astype(np.float32)
    mask = np.concatenate([branch.connections.mask for branch in part], axis=1).astype(np.float32)
    pair = part[0].pair
    weight_name = f"{base}/weight"
    preact = f"{base}/preact"
    if pair.kind == "conv":
        graph.initializer.append(numpy_helper.from_array(weight, weight_name))
        pads = [d // 2 for d in pair.kernel] * 2
        nodes.append(
            helper.make_node(
                "Conv",
                [tensor, weight_name],
                [preact],
                name=f"{base}/conv",
                kernel_shape=list(pair.kernel),
                pads=pads,
            )
        )
    else:
        weight, mask = np.ascontiguousarray(weight.T), np.ascontiguousarray(mask.T)
        graph.initializer.append(numpy_helper.from_array(weight, weight_name))
        nodes.append(
            helper.make_node("MatMul", [tensor, weight_name], [preact], name=f"{base}/matmul")
        )
    output = f"{base}/output"
    template = activation_node(index, pair.target)
    if template is None and not _has_activation(pair.target):
        # A target without a nonlinearity (the logits layer): g is the identity in eq. 2.
        nodes.append(helper.make_node("Identity", [preact], [output], name=f"{base}/act"))
        return output, weight_name, mask, "Identity"
    if template is None:
        nodes.append(helper.make_node("Relu", [preact], [output], name=f"{base}/act"))
        return output, weight_name, mask, "Relu"
    act = onnx.NodeProto()
    act.CopyFrom(template)
    act.name = f"{base}/act"
    act.input[0] = preact
    del act.output[:]
    act.output.append(output)
    nodes.append(act)
    return output, weight_name, mask, template.op_type


def _has_activation(target: Layer) -> bool:
    """Whether the target's chain holds a nonlinearity (norms, Dropout, Identity are not)."""
    linear = {"BatchNormalization", "InstanceNormalization", "Dropout", "Identity"}
    return any(op not in linear for op in target.chain)


def _replace_input(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for position, name in enumerate(node.input):
            if name == old:
                node.input[position] = new


def _toposort(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """Stable topological order: each node as early as its inputs allow, ties by list position."""
    producer = {out: position for position, node in enumerate(nodes) for out in node.output if out}
    waiting = [0] * len(nodes)
    users: dict[int, list[int]] = {}
    for position, node in enumerate(nodes):
        needs = {
            producer[name]
            for name in node.input
            if name and name not in available and name in producer
        }
        waiting[position] = len(needs)
        for need in needs:
            users.setdefault(need, []).append(position)
    ready = [position for position, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        position = heapq.heappop(ready)
        order.append(nodes[position])
        for user in users.get(position, []):
            waiting[user] -= 1
            if waiting[user] == 0:
                heapq.heappush(ready, user)
    if len(order) != len(nodes):
        raise RuntimeError("N2NSkip construction produced a cycle; this is a bug in n2nonnx")
    return order
