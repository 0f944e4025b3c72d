"""The unit graph of a model: one node per input channel/feature and per unit of every layer.

Nodes are ordered input -> output: the graph inputs first, then the layers in topological
order; each input or layer is a contiguous :class:`Block`. A directed edge ``s -> t`` joins
unit ``s`` to unit ``t`` of a later layer when any weight between them is non-zero after
masking (binary), with weight ``sum |w|`` over the kernel (weighted). Which units feed which
comes from the layer view's edges (:class:`n2nonnx.graph.Edge`): their unit maps follow
residual adds, concat, pooling, flatten/reshape and gathers; an edge without a map links
every source unit to every target unit that has a non-zero weight.

N2NSkip layers (``Layer.is_skip``) add no nodes: their output units are the units of
the layer they add into (``Layer.merges_into``), so a skip weight ``S[o, i]`` is an edge
from source unit ``i`` straight to target unit ``o``. The *reference* graph of a model is
the same graph with the skip layers left out and masks ignored (every weight position is
an edge; weighted: a masked-out position gets the mean |w| of its layer's kept weights).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from n2nonnx.connectivity.implicit import ImplicitFlow
from n2nonnx.connectivity.links import LayerConnections, LinkCollector, concat, layer_strength
from n2nonnx.errors import InvalidArgumentError, InvalidModelError
from n2nonnx.graph.trace import input_units

logger = logging.getLogger(__name__)

IMPLICIT_MIN_EDGES = 50_000
"""Edges in complete layer-to-layer blocks from which build_unit_graph keeps them implicit.

Below it the explicit matrix is under a megabyte and the graph takes the explicit path."""


@dataclass(frozen=True)
class Block:
    """A contiguous range of nodes: one graph input or one layer.

    Attributes:
        name: layer name, or ``input:<graph input name>``.
        start: first node index.
        size: number of nodes (units).
        depth: 0 for a graph input, the layer's depth otherwise.
    """

    name: str
    start: int
    size: int
    depth: int = 0
    weight: str | None = None

    @property
    def stop(self) -> int:
        """One past the last node index."""
        return self.start + self.size

    @property
    def is_input(self) -> bool:
        """True for a graph-input block."""
        return self.name.startswith("input:")


class UnitGraph:
    """A model's units and the connections between them.

    The connections are held explicitly (a CSR matrix of edges) or, for a dense network,
    implicitly as complete bipartite blocks (:class:`ImplicitFlow`: O(units) memory for
    any number of edges). Heat diffusion, degrees, components, dead units and plots use
    either form as it is (:attr:`connections`); :attr:`flow` and :attr:`adjacency` build
    the explicit matrix on request (O(edges) memory: 25 million edges for a dense VGG19).

    Attributes:
        blocks: the inputs and layers, in node order.
        output_nodes: units of the layers that reach a graph output.
        weighted: whether edge weights are sum |w| (else binary).
        implicit: the bicliques form, or None for an explicit graph.
    """

    __slots__ = ("_flow", "blocks", "implicit", "output_nodes", "weighted")

    def __init__(
        self,
        flow: sp.csr_array | None = None,
        blocks: tuple[Block, ...] = (),
        output_nodes: np.ndarray | None = None,
        weighted: bool = False,
        *,
        implicit: ImplicitFlow | None = None,
    ) -> None:
        """A graph from its flow matrix or its implicit form (exactly one of the two).

        Args:
            flow: directed (n, n) CSR matrix; ``flow[s, t] > 0`` for an edge from unit s to
                a unit t of a later layer (1.0, or sum |w| when weighted).
            blocks: the inputs and layers, in node order.
            output_nodes: units of the layers that reach a graph output.
            weighted: whether edge weights are sum |w| (else binary).
            implicit: the flow as bicliques (binary only).

        Raises:
            InvalidArgumentError: neither or both of flow and implicit, or a weighted
                implicit graph.
        """
        if (flow is None) == (implicit is None):
            raise InvalidArgumentError("a UnitGraph needs exactly one of flow and implicit")
        if implicit is not None and weighted:
            raise InvalidArgumentError("an implicit UnitGraph is binary: weighted must be False")
        self._flow = flow
        self.implicit = implicit
        self.blocks = tuple(blocks)
        self.output_nodes = (
            np.zeros(0, dtype=np.int64) if output_nodes is None else np.asarray(output_nodes)
        )
        self.weighted = weighted

    def __repr__(self) -> str:
        form = "implicit" if self.is_implicit else "explicit"
        return f"UnitGraph({self.n_nodes} units, {self.n_edges} edges, {len(self.blocks)} blocks, {form})"

    @property
    def is_implicit(self) -> bool:
        """True when the edges are held as bicliques (:attr:`implicit`)."""
        return self.implicit is not None

    @property
    def flow(self) -> sp.csr_array:
        """Directed (n, n) CSR matrix of the edges (built once on request if implicit)."""
        if self._flow is None:
            assert self.implicit is not None
            logger.debug("materialising %d edges of an implicit unit graph", self.n_edges)
            from n2nonnx.connectivity.heat import compact

            self._flow = compact(self.implicit.to_csr())
        return self._flow

    @property
    def n_nodes(self) -> int:
        """Number of nodes."""
        if self.implicit is not None:
            return self.implicit.n_nodes
        return int(self.flow.shape[0])

    @property
    def n_edges(self) -> int:
        """Number of (undirected) edges."""
        if self.implicit is not None:
            return self.implicit.n_edges
        return int(self.flow.nnz)

    @property
    def input_nodes(self) -> np.ndarray:
        """Indices of the graph-input nodes (the heat sources)."""
        ranges = [np.arange(b.start, b.stop) for b in self.blocks if b.is_input]
        return np.concatenate(ranges) if ranges else np.zeros(0, dtype=np.int64)

    @property
    def adjacency(self) -> sp.csr_array:
        """The symmetric adjacency ``W`` of the undirected unit graph (explicit: O(edges))."""
        from n2nonnx.connectivity.heat import compact

        return compact(sp.csr_array(self.flow + self.flow.T))

    @property
    def connections(self) -> sp.csr_array | ImplicitFlow:
        """The undirected graph in the form :mod:`~n2nonnx.connectivity.heat` takes as is.

        The :class:`ImplicitFlow` of an implicit graph (never expanded), else the CSR
        adjacency.
        """
        return self.implicit if self.implicit is not None else self.adjacency

    def degrees(self) -> np.ndarray:
        """Degree (weighted: strength) of every unit in the undirected graph."""
        if self.implicit is not None:
            return self.implicit.degrees
        flow = self.flow
        return np.asarray(flow.sum(axis=1)).ravel() + np.asarray(flow.sum(axis=0)).ravel()

    def dead_units(self) -> dict[str, int]:
        """Units per layer with no directed path from the inputs, or none to the outputs.

        Returns:
            layer name -> number of dead units (every layer listed, inputs excluded).
        """
        directed = self.implicit.hub_graph() if self.implicit is not None else self.flow
        forward, backward = live_nodes(directed, self.input_nodes, self.output_nodes)
        n = self.n_nodes
        return dead_per_block(self.blocks, forward[:n] & backward[:n])

    def same_nodes(self, other: UnitGraph) -> bool:
        """True if ``other`` has the same blocks (names and sizes) in the same order."""
        return [(b.name, b.size) for b in self.blocks] == [(b.name, b.size) for b in other.blocks]

    def aligned_to(self, reference: UnitGraph) -> UnitGraph | None:
        """This graph with its blocks in ``reference``'s order, matched by weight name and size.

        Adding skips re-sorts the graph, and parallel layers (a ResNet's shortcut conv and its
        main-path conv) may swap places; a layer is the same layer when its weight is.

        Args:
            reference: the graph whose block order to take.

        Returns:
            The reordered graph (``self`` when already in order), or None when the blocks
            differ (another architecture).
        """
        if self.same_nodes(reference):
            return self
        mine = {_block_key(b): b for b in self.blocks}
        if len(mine) != len(self.blocks) or len(self.blocks) != len(reference.blocks):
            return None
        order, blocks, start = [], [], 0
        for wanted in reference.blocks:
            block = mine.get(_block_key(wanted))
            if block is None:
                return None
            order.append(np.arange(block.start, block.stop))
            blocks.append(Block(block.name, start, block.size, block.depth, block.weight))
            start += block.size
        permutation = np.concatenate(order) if order else np.zeros(0, dtype=np.int64)
        position = np.empty_like(permutation)
        position[permutation] = np.arange(len(permutation))
        outputs = np.sort(position[self.output_nodes])
        if self.implicit is not None:
            return UnitGraph(
                blocks=tuple(blocks),
                output_nodes=outputs,
                implicit=self.implicit.permuted(permutation),
            )
        return UnitGraph(
            flow=sp.csr_array(self.flow[permutation][:, permutation]),
            blocks=tuple(blocks),
            output_nodes=outputs,
            weighted=self.weighted,
        )


def _block_key(block: Block) -> tuple[str, int]:
    return (block.weight or block.name, block.size)


def reachable(flow: sp.csr_array, starts: np.ndarray) -> np.ndarray:
    """Boolean mask of the nodes reachable from ``starts`` along directed edges.

    Args:
        flow: directed (n, n) CSR matrix; ``flow[s, t] != 0`` is an edge from s to t (pass
            its transpose to walk the edges backwards).
        starts: indices of the start nodes (reachable themselves).

    Returns:
        Length-n bool array.
    """
    flow = sp.csr_array(flow)
    seen = np.zeros(flow.shape[0], dtype=bool)
    frontier = np.unique(np.asarray(starts, dtype=np.int64))
    seen[frontier] = True
    while frontier.size:  # breadth first, one layer of the graph per step
        reached = flow[frontier].indices
        frontier = np.unique(reached[~seen[reached]])
        seen[frontier] = True
    return seen


def live_nodes(
    flow: sp.csr_array, inputs: np.ndarray, outputs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(reached from an input, reaches an output) for every node of a directed flow.

    Args:
        flow: directed (n, n) matrix; ``flow[s, t] != 0`` is an edge from s to t.
        inputs: indices of the input nodes.
        outputs: indices of the nodes that feed a graph output.

    Returns:
        Two length-n bool arrays.
    """
    return reachable(flow, inputs), reachable(sp.csr_array(flow.T), outputs)


def dead_per_block(blocks, alive: np.ndarray) -> dict[str, int]:
    """Per layer block (inputs excluded): its nodes that are not ``alive``."""
    return {b.name: int(b.size - alive[b.start : b.stop].sum()) for b in blocks if not b.is_input}


def load_layers(model):
    """A loaded model with its layer view (``n2nonnx.load`` unless it is one already).

    Args:
        model: a path, serialized bytes, an ``onnx.ModelProto`` or an ``n2nonnx.Model``.

    Returns:
        An object with ``.layers`` and ``.initializer(name)`` (an ``n2nonnx.Model``).
    """
    if hasattr(model, "layers") and hasattr(model, "initializer"):
        return model
    from n2nonnx import load

    return load(model)


def build_unit_graph(
    model, *, weighted: bool = False, reference: bool = False, implicit: bool | None = None
) -> UnitGraph:
    """The unit graph of a model (heat diffusion, the N2NSkip paper's section 3.2).

    Args:
        model: path, ``onnx.ModelProto`` or loaded ``n2nonnx`` model.
        weighted: edge weight sum |w| over the kernel (else 1 per connected unit pair).
        reference: build the model's dense reference instead: N2NSkip layers left out,
            masks ignored.
        implicit: keep complete layer-to-layer blocks as bicliques (:class:`ImplicitFlow`,
            O(units) memory) rather than edges. None (default): when they hold at least
            ``IMPLICIT_MIN_EDGES`` edges (a dense network of some size). Binary graphs only.

    Returns:
        The :class:`UnitGraph`.

    Raises:
        InvalidModelError: an N2NSkip layer whose target layer cannot be found.
        InvalidArgumentError: ``implicit=True`` with ``weighted=True``.
    """
    if implicit and weighted:
        raise InvalidArgumentError(
            "an implicit unit graph is binary: use weighted=False, or implicit=None/False"
        )
    view = load_layers(model)
    layers = sorted(view.layers, key=lambda layer: layer.index)
    skips = {layer.name for layer in layers if layer.is_skip}
    blocks, n_nodes = _blocks(view, layers, skips)
    links = LinkCollector(n_nodes, weighted=weighted)
    for layer in layers:
        if layer.name in skips and reference:
            continue
        target = _target_block(layer, blocks)
        strength = layer_strength(view, layer, reference=reference, weighted=weighted)
        connections = LayerConnections(layer, strength)
        for edge in layer.fed_by:
            if edge.source in skips or edge.source not in blocks:
                continue  # a skip's output is its target's: those edges already exist
            links.add(connections, edge, blocks[edge.source], target)
        del strength, connections
    outputs = [
        np.arange(blocks[layer.name].start, blocks[layer.name].stop)
        for layer in layers
        if layer.name in blocks and any(e.target.startswith("output:") for e in layer.feeds)
    ]
    output_nodes = concat(outputs, int)
    use_implicit = implicit if implicit is not None else links.biclique_edges >= IMPLICIT_MIN_EDGES
    if use_implicit and not weighted:
        logger.info(
            "unit graph kept implicit: %d of its edges in complete blocks", links.biclique_edges
        )
        return UnitGraph(
            blocks=tuple(blocks.values()),
            output_nodes=output_nodes,
            implicit=links.implicit_flow(),
        )
    from n2nonnx.connectivity.heat import compact

    return UnitGraph(
        flow=compact(links.explicit_flow()),
        blocks=tuple(blocks.values()),
        output_nodes=output_nodes,
        weighted=weighted,
    )


def _blocks(view, layers, skips: set[str]) -> tuple[dict[str, Block], int]:
    """The graph inputs' and non-skip layers' blocks in node order, and the node count."""
    for layer in layers:
        if 0 in tuple(layer.weight_shape):
            raise InvalidModelError(
                f"layer {layer.name!r} has an empty weight of shape {tuple(layer.weight_shape)}; the unit "
                "graph needs every layer to have units and inputs: remove the layer or fix the export"
            )
    blocks: dict[str, Block] = {}
    start = 0
    for name, size in _input_sizes(view, layers).items():
        blocks[name] = Block(name, start, size, 0)
        start += size
    for layer in layers:
        if layer.name not in skips:
            blocks[layer.name] = Block(
                layer.name, start, int(layer.units), int(layer.depth), layer.weight
            )
            start += int(layer.units)
    return blocks, start


def _target_block(layer, blocks: dict[str, Block]) -> Block:
    """The block whose units a layer's outputs are (an N2NSkip layer's: its target's)."""
    if not layer.is_skip:
        return blocks[layer.name]
    target = getattr(layer, "merges_into", None)
    if target not in blocks:
        raise InvalidModelError(
            f"N2NSkip layer {layer.name!r}: cannot tell which layer it adds into "
            f"(merges_into={target!r}); re-create the skips with n2nonnx add_n2nskip"
        )
    return blocks[target]


def _input_sizes(view, layers) -> dict[str, int]:
    """Units of every graph input that feeds a layer.

    The size along the input's feature axis where its shape is known (the axis the layer
    view traces units on), else the largest unit a mapped edge uses, else the direct
    consumer's ``in_units``.
    """
    sizes: dict[str, int] = {}
    for layer in layers:
        for edge in layer.fed_by:
            if edge.source.startswith("input:") and edge.source not in sizes:
                sizes[edge.source] = _input_size(view, edge.source[len("input:") :], layers)
    return sizes


def _input_size(view, name: str, layers) -> int:
    size = input_units(view.index, name, list(layers))
    if size:
        return int(size)
    mapped = [
        int(np.max(e.unit_map)) + 1
        for layer in layers
        for e in layer.fed_by
        if e.source == f"input:{name}" and e.unit_map is not None and len(e.unit_map)
    ]
    if mapped:
        return max(mapped)
    direct = [layer.in_units for layer in layers if layer.input == name]
    return int(direct[0]) if direct else 1
