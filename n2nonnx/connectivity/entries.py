"""Weight entries in the unit graph: where each sits, which lie on an input-output path.

:class:`EntryGraph` keeps one boolean array per layer weight (the kept entries) and maps
every entry onto the nodes of :func:`~n2nonnx.connectivity.build_unit_graph`: a weight is
viewed as ``(rows, cols, kernel)`` (its unit axis, its input axis, the rest), each
``(row, col)`` is one unit pair, and each kernel entry of a pair is one weight. An entry
is *live* when one of its source units is reachable from the inputs and its target unit
reaches an output; the connectivity repair moves the entries that are not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from n2nonnx.connectivity.unit_graph import (
    UnitGraph,
    build_unit_graph,
    dead_per_block,
    live_nodes,
)
from n2nonnx.model import Model


@dataclass(frozen=True, eq=False)
class Wiring:
    """How one layer's weight entries map onto unit-graph nodes.

    The weight is viewed as ``(rows, cols, kernel)``: rows along its unit axis, cols along
    its input axis. ``targets[r, c]`` is the node of the output unit, ``in_units[r, c]``
    the layer's input unit; each mapped edge gives the source node of every input unit
    (-1 where another edge feeds it), each unmapped edge the nodes of its whole source.
    """

    weight: str
    axes: tuple[int, int]
    shape: tuple[int, ...]
    targets: np.ndarray
    in_units: np.ndarray
    mapped: tuple[np.ndarray, ...]
    unmapped: tuple[np.ndarray, ...]
    n_in: int
    is_skip: bool

    def view(self, array: np.ndarray) -> np.ndarray:
        """``array`` (the weight's shape) as ``(rows, cols, kernel)``."""
        moved = np.moveaxis(array, self.axes, (0, 1))
        return moved.reshape(moved.shape[0], moved.shape[1], -1)

    def unview(self, pairs: np.ndarray) -> np.ndarray:
        """A ``(rows, cols)`` array broadcast over the kernel, in the weight's layout."""
        rest = np.moveaxis(np.empty(self.shape, dtype=np.bool_), self.axes, (0, 1)).shape[2:]
        full = np.broadcast_to(pairs.reshape(pairs.shape + (1,) * len(rest)), pairs.shape + rest)
        return np.moveaxis(full, (0, 1), self.axes)

    def fed(self, forward: np.ndarray) -> np.ndarray:
        """Per input unit: fed by a node reachable from the inputs."""
        fed = np.zeros(self.n_in, dtype=np.bool_)
        for sources in self.mapped:
            fed |= (sources >= 0) & forward[np.maximum(sources, 0)]
        if any(forward[nodes].any() for nodes in self.unmapped):
            fed[:] = True
        return fed

    def live(self, forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
        """``(rows, cols)``: an entry here would lie on an input-output path."""
        return self.fed(forward)[self.in_units] & backward[self.targets]


def wirings(model: Model, graph: UnitGraph) -> list[Wiring]:
    """The wiring of every layer (N2NSkip layers target the layer they add into)."""
    blocks = {block.name: block for block in graph.blocks}
    skips = {layer.name for layer in model.layers if layer.is_skip}
    found = []
    for layer in model.layers:
        target = blocks[(layer.merges_into or layer.name) if layer.is_skip else layer.name]
        shape = tuple(int(d) for d in layer.weight_shape)
        rows = np.arange(shape[layer.unit_axis])[:, None]
        cols = np.arange(shape[layer.in_axis])[None, :]
        out_units, in_units = np.broadcast_arrays(*layer.weight_units(rows, cols))
        mapped, unmapped = [], []
        for edge in layer.fed_by:
            if edge.source in skips or edge.source not in blocks:
                continue
            source = blocks[edge.source]
            if edge.positions is None:
                unmapped.append(np.arange(source.start, source.stop))
            else:
                unit_map = np.asarray(edge.positions, dtype=np.int64)
                mapped.append(np.where(unit_map >= 0, source.start + unit_map, -1))
        found.append(
            Wiring(
                weight=layer.weight,
                axes=(layer.unit_axis, layer.in_axis),
                shape=shape,
                targets=target.start + out_units,
                in_units=np.ascontiguousarray(in_units),
                mapped=tuple(mapped),
                unmapped=tuple(unmapped),
                n_in=int(layer.in_units),
                is_skip=bool(layer.is_skip),
            )
        )
    return found


class EntryGraph:
    """The kept entries of every layer of a model and the unit graph they form.

    Attributes:
        blocks: the layers' node blocks (inputs left out).
        n: number of nodes.
        inputs / outputs: bool masks of the input nodes and of the output units.
        wirings: one :class:`Wiring` per layer (several may share a weight).
        kept: weight name -> bool array of its kept entries (non-zero after masking).
        flow: the unit edges of the last :meth:`reach` (count of unit pairs per edge).
    """

    def __init__(self, model: Model) -> None:
        graph = build_unit_graph(model)
        self.blocks = [block for block in graph.blocks if not block.is_input]
        self.n = graph.n_nodes
        self.inputs = nodes_mask(self.n, graph.input_nodes)
        self.outputs = nodes_mask(self.n, graph.output_nodes)
        self.wirings = wirings(model, graph)
        self.kept = {
            wiring.weight: np.ascontiguousarray(model.effective_weight(wiring.weight) != 0)
            for wiring in self.wirings
        }
        self.flow = sp.csr_array((self.n, self.n))

    def reach(self) -> tuple[np.ndarray, np.ndarray]:
        """Nodes reachable from the inputs, and nodes that reach an output."""
        rows, cols = [], []
        for wiring in self.wirings:
            r, c = np.nonzero(wiring.view(self.kept[wiring.weight]).any(axis=2))
            targets, in_units = wiring.targets[r, c], wiring.in_units[r, c]
            for sources in wiring.mapped:
                s = sources[in_units]
                rows.append(s[s >= 0])
                cols.append(targets[s >= 0])
            fed = np.unique(targets)
            for nodes in wiring.unmapped:
                rows.append(np.repeat(nodes, fed.size))
                cols.append(np.tile(fed, nodes.size))
        s, t = cat(rows), cat(cols)
        flow = sp.csr_array((np.ones(s.size), (s, t)), shape=(self.n, self.n))
        flow.sum_duplicates()
        self.flow = flow
        return live_nodes(flow, np.flatnonzero(self.inputs), np.flatnonzero(self.outputs))

    def live(self, weight: str, forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
        """Entries of ``weight`` on (or that would be on) an input-output path, in any layer."""
        live = np.zeros(self.kept[weight].shape, dtype=np.bool_)
        for wiring in self.wirings:
            if wiring.weight == weight:
                live |= wiring.unview(wiring.live(forward, backward))
        return live

    def dead_units(self, alive: np.ndarray) -> dict[str, int]:
        """Units per layer on no input-output path."""
        return dead_per_block(self.blocks, alive)


def nodes_mask(n: int, indices: np.ndarray) -> np.ndarray:
    """A bool mask of ``n`` nodes, True at ``indices``."""
    mask = np.zeros(n, dtype=np.bool_)
    mask[np.asarray(indices, dtype=np.int64)] = True
    return mask


def cat(parts: list[np.ndarray]) -> np.ndarray:
    """The parts concatenated (an empty int array for none)."""
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
