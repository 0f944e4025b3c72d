"""Wiring the layer view: edges, depths and where each skip branch is added."""

from __future__ import annotations

from n2nonnx.graph.index import GraphIndex
from n2nonnx.graph.records import CHAIN_OPS, Edge, Layer


def attach_edges(
    layers: list[Layer], edges: list[Edge], index: GraphIndex, blockers: dict[str, str]
) -> list[Layer]:
    """The layers with their edges, depths and (for skip layers) the layer they add into.

    Args:
        layers: the layers in topological order, without edges.
        edges: the traced edges between them.
        index: the graph.
        blockers: layer name -> why its units cannot be removed.

    Returns:
        New layer records.
    """
    from dataclasses import replace

    feeds: dict[str, list[Edge]] = {layer.name: [] for layer in layers}
    fed_by: dict[str, list[Edge]] = {layer.name: [] for layer in layers}
    for edge in edges:
        if edge.source in feeds:
            feeds[edge.source].append(edge)
        if edge.target in fed_by:
            fed_by[edge.target].append(edge)
    depth: dict[str, int] = {}
    for layer in layers:  # topological order
        sources = [depth[e.source] for e in fed_by[layer.name] if e.source in depth]
        depth[layer.name] = 1 + max(sources, default=0)
    by_preact = {layer.preact: layer.name for layer in layers if not layer.is_skip}
    layer_nodes = {layer.name for layer in layers}
    result = []
    for layer in layers:
        merges_into = None
        if layer.is_skip:
            merges_into = _skip_target(index, layer, by_preact, layer_nodes)
        result.append(
            replace(
                layer,
                depth=depth[layer.name],
                feeds=tuple(feeds[layer.name]),
                fed_by=tuple(fed_by[layer.name]),
                merges_into=merges_into,
                removal_blocker=blockers.get(layer.name),
            )
        )
    return result


def _skip_target(
    index: GraphIndex, layer: Layer, by_preact: dict[str, str], layer_nodes: set[str]
) -> str | None:
    """The layer whose pre-activation a skip layer's branch is added into.

    Read from the graph: walk forward from the skip layer's output through non-layer ops
    (activation, Sum, scatter ...) to the first ``Add`` whose other input is a sequential
    layer's pre-activation, or a tensor of its chain (after its BatchNorm).
    """
    stack, seen = [layer.output], {layer.output}
    while stack:
        tensor = stack.pop()
        for position in index.consumers.get(tensor, []):
            node = index.nodes[position]
            if index.node_names[position] in layer_nodes:
                continue  # another layer: the branch does not pass through layers
            if node.op_type == "Add":
                for other in node.input:
                    owner = _chain_owner(index, other, by_preact) if other != tensor else None
                    if owner is not None:
                        return owner
            for output in node.output:
                if output and output not in seen:
                    seen.add(output)
                    stack.append(output)
    return None


def _chain_owner(index: GraphIndex, tensor: str, by_preact: dict[str, str]) -> str | None:
    """The layer whose chain holds ``tensor`` (walking back through chain ops), or None."""
    for _ in range(len(CHAIN_OPS)):
        if tensor in by_preact:
            return by_preact[tensor]
        node = index.producer_node(tensor)
        if node is None or node.op_type not in CHAIN_OPS or not node.input:
            return None
        tensor = node.input[0]
    return None
