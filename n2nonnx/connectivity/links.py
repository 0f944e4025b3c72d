"""The edges each layer adds to the unit graph, as bicliques or as explicit pairs.

A layer's connections come from its weight: ``strength[o, i]`` is ``sum |w|`` over the
kernel (weighted) or whether any kernel weight is non-zero (binary) between output unit o
and input unit i. A binary layer whose strength is complete (a dense layer, or any layer
of a dense reference) joins, per convolution group, every source unit that feeds the
group's inputs to every unit of the group: one biclique per group, whatever the number of
edges (:class:`LinkCollector`). A mostly complete one (a dense layer with a few zero
weights) is a biclique without its odd rows or columns, whose edges are kept explicitly.
Everything else is kept as explicit pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from n2nonnx.connectivity.implicit import ImplicitFlow


def layer_strength(view, layer, *, reference: bool, weighted: bool) -> np.ndarray | None:
    """The layer's unit strength matrix (weight unit axis x weight input axis).

    Args:
        view: the loaded model (``initializer``, ``effective_weight``).
        layer: the layer.
        reference: every weight position counts (masks ignored); weighted: a masked-out
            position gets the mean |w| of the layer's kept weights.
        weighted: sum |w| over the kernel (float64), else any non-zero (bool).

    Returns:
        The matrix, or None for a binary reference (every pair connected: no weight read).
    """
    if reference and not weighted:
        return None
    if reference:
        magnitude = np.abs(np.asarray(view.initializer(layer.weight), dtype=np.float64))
        kept = magnitude[magnitude > 0]
        fill = float(kept.mean()) if kept.size else 1.0
        weight = np.where(magnitude > 0, magnitude, fill)
    else:
        weight = np.asarray(view.effective_weight(layer))
    moved = np.moveaxis(weight, (layer.unit_axis, layer.in_axis), (0, 1))
    moved = moved.reshape(moved.shape[0], moved.shape[1], -1)
    if weighted:
        return np.abs(moved).astype(np.float64).sum(axis=2)
    return (moved != 0).any(axis=2)


def unit_pairs(layer, strength: np.ndarray | None):
    """(output unit, input unit, weight) of every non-zero entry of the strength matrix."""
    if strength is None:
        shape = (layer.weight_shape[layer.unit_axis], layer.weight_shape[layer.in_axis])
        strength = np.ones(shape, dtype=bool)
    rows, cols = np.nonzero(strength)  # rows index weight unit_axis, cols in_axis
    values = strength[rows, cols].astype(np.float64)
    out_units, in_units = layer.weight_units(rows, cols)
    return out_units, in_units, values


def edge_pairs(unit_map, source_size: int, out_units, in_units, strength):
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


class LayerConnections:
    """One layer's strength matrix and, computed on first use, its non-zero unit pairs.

    Attributes:
        layer: the layer.
        strength: :func:`layer_strength` (None: a binary reference, every pair connected).
    """

    def __init__(self, layer, strength: np.ndarray | None) -> None:
        """Hold ``layer`` and its ``strength``."""
        self.layer = layer
        self.strength = strength
        self._pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @property
    def pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:func:`unit_pairs` of the layer (computed once)."""
        if self._pairs is None:
            self._pairs = unit_pairs(self.layer, self.strength)
        return self._pairs


def _group_connections(layer, edge, strength: np.ndarray | None):
    """Per convolution group: (source units, present); None: every pair present.

    ``present[i, o]`` is true when source unit ``i`` reaches the group's output ``o``
    through any of the layer inputs it feeds.
    """
    groups = max(int(layer.groups), 1)
    per_group = layer.units // groups
    unit_map = np.asarray(edge.positions, dtype=np.int64).reshape(groups, -1)
    if strength is not None:
        inputs = unit_map.shape[1]
        if layer.op == "ConvTranspose":  # (out/groups, in): columns grouped
            local = strength.reshape(per_group, groups, inputs).transpose(1, 0, 2)
        else:  # (out, in/groups): rows grouped
            local = strength.reshape(groups, per_group, inputs)
    for group in range(groups):
        sources = unit_map[group]
        valid = sources >= 0
        senders, inverse, counts = np.unique(
            sources[valid], return_inverse=True, return_counts=True
        )
        if strength is None:
            yield senders, None
            continue
        columns = local[group][:, valid]  # (outputs, fed inputs)
        if np.all(counts == 1):
            present = np.empty((senders.size, per_group), dtype=bool)
            present[inverse] = columns.T
        else:
            order = np.argsort(inverse, kind="stable")
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
            present = np.logical_or.reduceat(columns[:, order], starts, axis=1).T
        yield senders, present


@dataclass
class _Biclique:
    source: str
    target: str
    senders: np.ndarray  # global unit indices
    receivers: np.ndarray

    @property
    def edges(self) -> int:
        return int(self.senders.size) * int(self.receivers.size)


@dataclass
class LinkCollector:
    """Accumulates a graph's edges as bicliques and explicit pairs, then builds the flow.

    Attributes:
        n_nodes: number of units.
        weighted: edge weights are sum |w| (then nothing is a biclique).
    """

    n_nodes: int
    weighted: bool
    _bicliques: list[_Biclique] = field(default_factory=list)
    _rows: list[np.ndarray] = field(default_factory=list)
    _cols: list[np.ndarray] = field(default_factory=list)
    _values: list[np.ndarray] = field(default_factory=list)

    def add(self, connections: LayerConnections, edge, source, target) -> None:
        """Add the edges of one layer-view edge.

        Args:
            connections: the layer whose weight makes the edges, with its strength.
            edge: the :class:`n2nonnx.graph.Edge` (source, unit map).
            source: the source :class:`Block`.
            target: the target :class:`Block` (the layer's, or a skip's target layer's).
        """
        layer, strength = connections.layer, connections.strength
        if not self.weighted and edge.positions is None:
            complete = strength is None or bool(np.all(strength))
            out_units = np.arange(layer.units) if complete else np.unique(connections.pairs[0])
            self._biclique(source, target, np.arange(source.size), out_units)
            return
        if not self.weighted and (
            strength is None or np.count_nonzero(strength) * 2 >= strength.size
        ):
            per_group = layer.units // max(int(layer.groups), 1)
            for group, (senders, present) in enumerate(_group_connections(layer, edge, strength)):
                receivers = group * per_group + np.arange(per_group)
                self._dense_group(source, target, senders, receivers, present)
            return
        out_units, in_units, values = connections.pairs
        s, t, w = edge_pairs(edge.positions, source.size, out_units, in_units, values)
        self._explicit(source.start + s, target.start + t, w)

    def _dense_group(self, source, target, senders, receivers, present) -> None:
        """One group of a mostly complete layer: a biclique, plus the odd rows or columns.

        ``present[i, o]``: source unit ``senders[i]`` reaches ``receivers[o]`` (None: all
        pairs). The units with a missing pair on the cheaper side (rows or columns) are
        left out of the biclique and their present edges kept explicitly; all explicit
        when that is not the smaller part.
        """
        if present is None or present.all():
            self._biclique(source, target, senders, receivers)
            return
        odd_rows = ~present.all(axis=1)
        odd_cols = ~present.all(axis=0)
        row_cost = int(odd_rows.sum()) * present.shape[1]
        col_cost = int(odd_cols.sum()) * present.shape[0]
        if min(row_cost, col_cost) * 2 > present.size:
            rows, cols = np.nonzero(present)
        elif row_cost <= col_cost:
            self._biclique(source, target, senders[~odd_rows], receivers)
            rows, cols = np.nonzero(present & odd_rows[:, None])
        else:
            self._biclique(source, target, senders, receivers[~odd_cols])
            rows, cols = np.nonzero(present & odd_cols[None, :])
        self._explicit(source.start + senders[rows], target.start + receivers[cols])

    def _explicit(self, rows: np.ndarray, cols: np.ndarray, values=None) -> None:
        self._rows.append(rows)
        self._cols.append(cols)
        self._values.append(np.ones(rows.size) if values is None else values)

    def _biclique(self, source, target, senders, receivers) -> None:
        if senders.size and receivers.size:
            self._bicliques.append(
                _Biclique(
                    source.name, target.name, source.start + senders, target.start + receivers
                )
            )

    @property
    def biclique_edges(self) -> int:
        """Edges held in bicliques (before merging overlaps)."""
        return sum(b.edges for b in self._bicliques)

    def explicit_flow(self) -> sp.csr_array:
        """Every edge as one (n, n) CSR matrix (binary, or summed |w| when weighted)."""
        rows, cols, values = list(self._rows), list(self._cols), list(self._values)
        for biclique in self._bicliques:
            rows.append(np.repeat(biclique.senders, biclique.receivers.size))
            cols.append(np.tile(biclique.receivers, biclique.senders.size))
            values.append(np.ones(biclique.edges))
        n = self.n_nodes
        flow = sp.coo_array(
            (concat(values, float), (concat(rows, int), concat(cols, int))), shape=(n, n)
        ).tocsr()
        flow.sum_duplicates()
        flow.eliminate_zeros()
        if not self.weighted:
            flow.data[:] = 1.0
        return sp.csr_array(flow)

    def implicit_flow(self) -> ImplicitFlow:
        """The edges as an :class:`ImplicitFlow`; no edge counted twice.

        Bicliques between the same two blocks with the same receivers are merged (a layer
        fed twice by one block); if their receivers overlap otherwise, that pair of blocks
        goes explicit. Explicit pairs that a biclique already holds are dropped.
        """
        groups: dict[tuple[str, str], list[_Biclique]] = {}
        for biclique in self._bicliques:
            groups.setdefault((biclique.source, biclique.target), []).append(biclique)
        senders: list[tuple[np.ndarray, np.ndarray]] = []
        receivers: list[tuple[np.ndarray, np.ndarray]] = []
        hubs = 0
        rows, cols = list(self._rows), list(self._cols)
        for members in groups.values():
            merged: dict[bytes, list[_Biclique]] = {}
            for biclique in members:
                merged.setdefault(biclique.receivers.tobytes(), []).append(biclique)
            reached = np.concatenate([same[0].receivers for same in merged.values()])
            if np.unique(reached).size < reached.size:  # overlapping receivers: explicit
                for b in members:
                    rows.append(np.repeat(b.senders, b.receivers.size))
                    cols.append(np.tile(b.receivers, b.senders.size))
                continue
            for same in merged.values():
                hub, hubs = hubs, hubs + 1
                sending = np.unique(np.concatenate([b.senders for b in same]))
                senders.append((sending, np.full(sending.size, hub)))
                receivers.append((same[0].receivers, np.full(same[0].receivers.size, hub)))
        send = (concat([s for s, _ in senders], int), concat([h for _, h in senders], int))
        receive = (concat([r for r, _ in receivers], int), concat([h for _, h in receivers], int))
        flow = ImplicitFlow.from_parts(self.n_nodes, send, receive)
        source, target = concat(rows, int), concat(cols, int)
        if source.size and flow.n_bicliques:
            covered = np.asarray(
                flow.senders[source].multiply(flow.receivers[target]).sum(axis=1)
            ).ravel()
            source, target = source[covered == 0], target[covered == 0]
        return ImplicitFlow.from_parts(self.n_nodes, send, receive, (source, target))


def concat(parts: list[np.ndarray], dtype) -> np.ndarray:
    """The parts concatenated as ``dtype`` (an empty array of it for none)."""
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)
