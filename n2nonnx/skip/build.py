"""N2NSkip subgraphs: the ONNX nodes of one skip branch and its Add into the target.

Per pair (paper eq. 2, ``a_{l+k} = g(z_{l+k} + g(S * a_l))``)::

    a_l -> [MaxPool / AveragePool to the target's size | GlobalAveragePool for conv -> FC]
        -> Gather(axis 1, used source units) -> [Flatten] -> Conv / MatMul (weight S, masked)
        -> [BatchNormalization] -> g (the target's activation) -> [MaxPool / AveragePool]
        -> Sum over the target's pairs -> Add into z_{l+k}

The BatchNorm (``norm="batchnorm"``) and the pooling after ``g`` (``pool_at="output"``)
are the authors' variant (:class:`Style`); by default a branch pools before its conv.

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
from n2nonnx.skip.candidates import Pair
from n2nonnx.skip.pools import Pools
from n2nonnx.skip.sampling import Connections

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


@dataclass(frozen=True)
class Style:
    """How the branches are built.

    Attributes:
        join: where a branch is added (see :func:`join_tensor`).
        merge: ``"target"``: the pairs into one target share one skip layer over their
            concatenated (gathered, aligned) sources, ``a = g(z + g(S [a_l1; a_l2; ...]))``;
            ``"pair"``: one skip layer per pair, summed (eq. 2 applied per pair).
        norm: ``"none"`` or ``"batchnorm"``: a BatchNormalization of the skip layer's own
            between its Conv / MatMul and its activation (the authors' code).
        pool_at: ``"source"``: a conv -> conv branch pools its source down to the target's
            size before the skip conv (cheapest); ``"output"``: the skip conv runs at the
            block input's size (the network's own pooling of the source where it has one,
            else the source's size) and the rest of the pooling follows the activation
            (the authors' code: sparse conv, BatchNorm, ReLU, max-pool).
    """

    join: str = "activation"
    merge: str = "target"
    norm: str = "none"
    pool_at: str = "source"


def add_branches(
    proto: onnx.ModelProto,
    index: GraphIndex,
    branches: list[Branch],
    style: Style | None = None,
) -> tuple[dict[str, Built], dict[str, np.ndarray]]:
    """Add the skip subgraphs of ``branches`` to ``proto`` in place.

    Args:
        proto: the model to edit (a copy of the one ``index`` describes).
        index: the index of the unedited model.
        branches: the pairs to build, ordered by target.
        style: how the branches are built (default :class:`Style`).

    Returns:
        ``(built, masks)``: per pair (keyed by ``Pair.base_name``) where its weights
        live, and the mask of every skip weight in its stored layout.
    """
    style = style or Style()
    graph = proto.graph
    new_nodes: list[onnx.NodeProto] = []
    groups: dict[str, list[Branch]] = {}
    for branch in branches:
        groups.setdefault(branch.pair.target.name, []).append(branch)
    built: dict[str, Built] = {}
    skip_masks: dict[str, np.ndarray] = {}
    renamed: dict[str, str] = {}
    joins = {join_tensor(index, group[0].pair.target, style.join) for group in groups.values()}
    pools = Pools(index, protected=joins)  # a pooling of a joined tensor would see the skips
    for name, group in groups.items():
        target = group[0].pair.target
        parts = _parts(group, style, pools)
        outputs = []
        for position, (part, after) in enumerate(parts):
            base = part[0].pair.base_name if len(part) == 1 else f"n2nskip/{name}"
            if len(part) > 1 and len(parts) > 1:
                base = f"n2nskip/{name}/part{position}"
            layer = _Layer(graph, index, base, new_nodes, pools, style)
            output, weight, mask, op = layer.build(part, after)
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
        preact = join_tensor(index, target, style.join)
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


def _parts(
    group: list[Branch], style: Style, pools: Pools
) -> list[tuple[list[Branch], tuple[int, ...]]]:
    """The skip layers of one target: ``(branches, pooling after the activation)`` each.

    One layer for the whole group (``merge="target"``) or one per pair; with
    ``pool_at="output"`` the branches of one layer must also share the pooling after the
    activation (their skip conv then runs at one size).
    """
    afters = [_windows(branch.pair, style, pools)[1] for branch in group]
    if style.merge == "pair" or len(group) == 1:
        return [([branch], after) for branch, after in zip(group, afters, strict=True)]
    parts: dict[tuple[int, ...], list[Branch]] = {}
    for branch, after in zip(group, afters, strict=True):
        parts.setdefault(after, []).append(branch)
    return [(members, after) for after, members in parts.items()]


def _windows(pair: Pair, style: Style, pools: Pools) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(before, after)``: a conv -> conv pair's pooling before the skip conv and after its activation.

    ``()`` stands for no pooling.
    """
    if pair.kind != "conv" or not pair.pool:
        return (), ()
    if style.pool_at == "source":
        return tuple(pair.pool), ()
    before = pools.network_window(pair.source.tensor, _pool_op(pair), tuple(pair.pool))
    after = tuple(w // b for w, b in zip(pair.pool, before, strict=True))
    return (before if any(b > 1 for b in before) else ()), (
        after if any(a > 1 for a in after) else ()
    )


def _pool_op(pair: Pair) -> str:
    return "MaxPool" if pair.alignment.startswith("max") else "AveragePool"


class _Layer:
    """Writes one skip layer: aligned sources -> Conv / MatMul -> [BatchNorm] -> g -> [pool]."""

    def __init__(
        self,
        graph: onnx.GraphProto,
        index: GraphIndex,
        base: str,
        nodes: list[onnx.NodeProto],
        pools: Pools,
        style: Style,
    ) -> None:
        self.graph, self.index, self.base = graph, index, base
        self.nodes, self.pools, self.style = nodes, pools, style

    def build(self, part: list[Branch], after: tuple[int, ...]) -> tuple[str, str, np.ndarray, str]:
        """The layer over ``part``: (output, weight, mask, activation op)."""
        inputs = [self._aligned_source(branch) for branch in part]
        tensor = inputs[0]
        base = self.base
        if len(inputs) > 1:
            tensor = f"{base}/inputs"
            self.nodes.append(
                helper.make_node("Concat", inputs, [tensor], name=f"{base}/concat", axis=1)
            )
        weight = np.concatenate([branch.weight for branch in part], axis=1).astype(np.float32)
        mask = np.concatenate([b.connections.mask for b in part], axis=1).astype(np.float32)
        pair = part[0].pair
        weight_name = f"{base}/weight"
        preact = f"{base}/preact"
        if pair.kind == "conv":
            self.graph.initializer.append(numpy_helper.from_array(weight, weight_name))
            pads = [d // 2 for d in pair.kernel] * 2
            self.nodes.append(
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
            self.graph.initializer.append(numpy_helper.from_array(weight, weight_name))
            self.nodes.append(
                helper.make_node("MatMul", [tensor, weight_name], [preact], name=f"{base}/matmul")
            )
        if self.style.norm == "batchnorm":
            preact = self._batchnorm(preact, pair.target.units)
        output, op = self._activation(preact, pair.target)
        if after:
            pooled = f"{base}/output_pooled"
            self.nodes.append(
                helper.make_node(
                    _pool_op(pair),
                    [output],
                    [pooled],
                    name=f"{base}/output_pool",
                    kernel_shape=list(after),
                    strides=list(after),
                )
            )
            output = pooled
        return output, weight_name, mask, op

    def _aligned_source(self, branch: Branch) -> str:
        """Align the source with the target (pooling, GAP), then gather the used units.

        Pooling acts per channel, so it commutes with the Gather; pooling first keeps the
        runtime's blocked conv layout up to a smaller tensor, and poolings are shared (see
        :class:`~n2nonnx.skip.pools.Pools`).
        """
        pair, connections = branch.pair, branch.connections
        base = pair.base_name
        tensor = pair.source.tensor
        before, _ = _windows(pair, self.style, self.pools)
        if before:
            tensor = self.pools.pooled(tensor, _pool_op(pair), before, base, self.nodes)
        if pair.kind == "conv->fc":
            tensor = self.pools.pooled(tensor, "GlobalAveragePool", (), base, self.nodes)
        indices = f"{base}/source_units"
        self.graph.initializer.append(
            numpy_helper.from_array(connections.used_sources.astype(np.int64), indices)
        )
        gathered = f"{base}/gathered"
        self.nodes.append(
            helper.make_node("Gather", [tensor, indices], [gathered], name=f"{base}/gather", axis=1)
        )
        if pair.kind == "conv->fc":
            self.nodes.append(
                helper.make_node(
                    "Flatten", [gathered], [f"{base}/flat"], name=f"{base}/flatten", axis=1
                )
            )
            return f"{base}/flat"
        return gathered

    def _batchnorm(self, tensor: str, units: int) -> str:
        """A BatchNormalization of ``tensor`` (scale 1, bias 0, mean 0, variance 1)."""
        base = self.base
        names = [f"{base}/bn/{part}" for part in ("scale", "bias", "mean", "var")]
        for name, value in zip(names, (1.0, 0.0, 0.0, 1.0), strict=True):
            array = np.full(units, value, dtype=np.float32)
            self.graph.initializer.append(numpy_helper.from_array(array, name))
        output = f"{base}/normalized"
        self.nodes.append(
            helper.make_node(
                "BatchNormalization",
                [tensor, *names],
                [output],
                name=f"{base}/bn",
                epsilon=1e-5,
                momentum=0.9,
            )
        )
        return output

    def _activation(self, preact: str, target: Layer) -> tuple[str, str]:
        """``g`` of the target (the identity for a target without one): (output, op)."""
        base = self.base
        output = f"{base}/output"
        template = activation_node(self.index, target)
        if template is None and not _has_activation(target):
            # A target without a nonlinearity (the logits layer): g is the identity in eq. 2.
            self.nodes.append(helper.make_node("Identity", [preact], [output], name=f"{base}/act"))
            return output, "Identity"
        if template is None:
            self.nodes.append(helper.make_node("Relu", [preact], [output], name=f"{base}/act"))
            return output, "Relu"
        act = onnx.NodeProto()
        act.CopyFrom(template)
        act.name = f"{base}/act"
        act.input[0] = preact
        del act.output[:]
        act.output.append(output)
        self.nodes.append(act)
        return output, template.op_type


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
