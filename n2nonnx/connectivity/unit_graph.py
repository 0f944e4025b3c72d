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

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

from n2nonnx.errors import InvalidModelError
from n2nonnx.graph.trace import input_units


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


@dataclass(frozen=True)
class UnitGraph:
    """A model's units and the connections between them.

    Attributes:
        flow: directed (n, n) CSR matrix; ``flow[s, t] > 0`` for an edge from unit s to a
            unit t of a later layer (1.0, or sum |w| when weighted).
        blocks: the inputs and layers, in node order.
        output_nodes: units of the layers that reach a graph output.
        weighted: whether edge weights are sum |w| (else binary).
    """

    flow: sp.csr_array
    blocks: tuple[Block, ...]
    output_nodes: np.ndarray
    weighted: bool = False

    @property
    def n_nodes(self) -> int:
        """Number of nodes."""
        return int(self.flow.shape[0])

    @property
    def n_edges(self) -> int:
        """Number of (undirected) edges."""
        return int(self.flow.nnz)

    @property
    def input_nodes(self) -> np.ndarray:
        """Indices of the graph-input nodes (the heat sources)."""
        ranges = [np.arange(b.start, b.stop) for b in self.blocks if b.is_input]
        return np.concatenate(ranges) if ranges else np.zeros(0, dtype=np.int64)

    @property
    def adjacency(self) -> sp.csr_array:
        """The symmetric adjacency ``W`` of the undirected unit graph."""
        from n2nonnx.connectivity.heat import compact

        return compact(sp.csr_array(self.flow + self.flow.T))

    def dead_units(self) -> dict[str, int]:
        """Units per layer with no directed path from the inputs, or none to the outputs.

        Returns:
            layer name -> number of dead units (every layer listed, inputs excluded).
        """
        alive = _reachable(self.flow, self.input_nodes) & _reachable(
            sp.csr_array(self.flow.T), self.output_nodes
        )
        return {
            b.name: int(b.size - alive[b.start : b.stop].sum())
            for b in self.blocks
            if not b.is_input
        }

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
        flow = sp.csr_array(self.flow[permutation][:, permutation])
        return UnitGraph(
            flow=flow,
            blocks=tuple(blocks),
            output_nodes=np.sort(position[self.output_nodes]),
            weighted=self.weighted,
        )


def _block_key(block: Block) -> tuple[str, int]:
    return (block.weight or block.name, block.size)


def _reachable(flow: sp.csr_array, starts: np.ndarray) -> np.ndarray:
    """Boolean mask of the nodes reachable from ``starts`` along directed edges."""
    n = flow.shape[0]
    seen = np.zeros(n, dtype=bool)
    if len(starts) == 0:
        return seen
    hub = sp.csr_array(
        (np.ones(len(starts)), (np.full(len(starts), n), np.asarray(starts))), shape=(n + 1, n + 1)
    )
    augmented = sp.csr_array(sp.block_diag((flow, sp.csr_array((1, 1)))) + hub)
    order = csgraph.breadth_first_order(augmented, n, directed=True, return_predecessors=False)
    seen[order[order < n]] = True
    return seen


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


def _layer_weight(view, layer, dense: bool, weighted: bool) -> np.ndarray:
    """The weight as the graph sees it: masked (model) or every position kept (reference)."""
    weight = np.asarray(view.initializer(layer.weight), dtype=np.float64)
    if not dense:
        return np.asarray(view.effective_weight(layer), dtype=np.float64)
    if not weighted:
        return np.ones_like(weight)
    magnitude = np.abs(weight)
    kept = magnitude[magnitude > 0]
    fill = float(kept.mean()) if kept.size else 1.0
    return np.where(magnitude > 0, magnitude, fill)


def _unit_connections(layer, weight: np.ndarray, weighted: bool):
    """(output unit, input unit, weight) triples of one layer's non-zero connections."""
    moved = np.moveaxis(np.abs(weight), (layer.unit_axis, layer.in_axis), (0, 1))
    if weighted:
        strength = moved.reshape(moved.shape[0], moved.shape[1], -1).sum(axis=2)
    else:
        strength = (moved.reshape(moved.shape[0], moved.shape[1], -1) > 0).any(axis=2)
    rows, cols = np.nonzero(strength)  # rows index weight unit_axis, cols in_axis
    values = strength[rows, cols].astype(np.float64)
    groups = max(int(layer.groups), 1)
    if layer.op == "ConvTranspose":  # weight (in, out/groups, k...): rows are local outputs
        in_per_group = layer.in_units // groups
        out_units = (cols // in_per_group) * (layer.units // groups) + rows
        return out_units, cols, values
    in_per_group = layer.in_units // groups
    in_units = (rows // (layer.units // groups)) * in_per_group + cols
    return rows, in_units, values


def build_unit_graph(model, *, weighted: bool = False, reference: bool = False) -> UnitGraph:
    """The unit graph of a model (heat diffusion, the N2NSkip paper's section 3.2).

    Args:
        model: path, ``onnx.ModelProto`` or loaded ``n2nonnx`` model.
        weighted: edge weight sum |w| over the kernel (else 1 per connected unit pair).
        reference: build the model's dense reference instead: N2NSkip layers left out,
            masks ignored.

    Returns:
        The :class:`UnitGraph`.

    Raises:
        InvalidModelError: an N2NSkip layer whose target layer cannot be found.
    """
    view = load_layers(model)
    layers = sorted(view.layers, key=lambda layer: layer.index)
    skips = {layer.name for layer in layers if layer.is_skip}
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
    rows, cols, values = [], [], []
    for layer in layers:
        if layer.name in skips:
            if reference:
                continue
            target = getattr(layer, "merges_into", None)
            if target not in blocks:
                raise InvalidModelError(
                    f"N2NSkip layer {layer.name!r}: cannot tell which layer it adds into "
                    f"(merges_into={target!r}); re-create the skips with n2nonnx add_n2nskip"
                )
            target_block = blocks[target]
        else:
            target_block = blocks[layer.name]
        out_units, in_units, strength = _unit_connections(
            layer, _layer_weight(view, layer, reference, weighted), weighted
        )
        for edge in layer.fed_by:
            if edge.source in skips or edge.source not in blocks:
                continue  # a skip's output is its target's: those edges already exist
            source = blocks[edge.source]
            s, t, w = _edge_connections(edge.unit_map, source.size, out_units, in_units, strength)
            rows.append(source.start + s)
            cols.append(target_block.start + t)
            values.append(w)
    n = start
    flow = sp.coo_array(
        (_cat(values, float), (_cat(rows, int), _cat(cols, int))), shape=(n, n)
    ).tocsr()
    flow.sum_duplicates()
    flow.eliminate_zeros()
    if not weighted:
        flow.data[:] = 1.0
    outputs = [
        np.arange(blocks[layer.name].start, blocks[layer.name].stop)
        for layer in layers
        if layer.name in blocks and any(e.target.startswith("output:") for e in layer.feeds)
    ]
    from n2nonnx.connectivity.heat import compact

    return UnitGraph(
        flow=compact(sp.csr_array(flow)),
        blocks=tuple(blocks.values()),
        output_nodes=_cat(outputs, int),
        weighted=weighted,
    )


def _cat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)


def _edge_connections(unit_map, source_size, out_units, in_units, strength):
    """(source unit, target unit, weight) for one layer-view edge into a layer."""
    if unit_map is not None:
        unit_map = np.asarray(unit_map, dtype=np.int64)
        source = unit_map[in_units]
        keep = source >= 0
        return source[keep], out_units[keep], strength[keep]
    # Unknown mapping: every source unit feeds every input unit of the target.
    per_output = np.bincount(out_units, weights=strength)
    targets = np.nonzero(per_output)[0]
    s = np.repeat(np.arange(source_size), targets.size)
    t = np.tile(targets, source_size)
    return s, t, np.tile(per_output[targets], source_size)


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
