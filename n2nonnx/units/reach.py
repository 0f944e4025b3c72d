"""Which units are alive: reached from a graph input, and reaching a graph output.

One reachability for every stage: deployment removes the units it finds dead here,
``n2nonnx connectivity`` reports the same counts, and the tests hold the unit graph's own
breadth-first search to them. It runs on the layer view: a unit reads an input position
where some weight between them is non-zero (:meth:`~n2nonnx.graph.Layer.unit_matrix`);
positions follow the edges' unit maps, except across ops that mix units
(:attr:`~n2nonnx.graph.Edge.mixed`) or maps that could not be followed, where every
source unit feeds every position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from n2nonnx.graph.layers import Edge, Layer
from n2nonnx.model import Model


@dataclass(frozen=True)
class Liveness:
    """Per layer, boolean arrays of what reaches what.

    Attributes:
        reached_in: layer -> its input positions a graph input reaches.
        reached_out: layer -> its units a graph input reaches.
        useful_in: layer -> its input positions that reach a graph output.
        useful_out: layer -> its units that reach a graph output.
    """

    reached_in: dict[str, np.ndarray]
    reached_out: dict[str, np.ndarray]
    useful_in: dict[str, np.ndarray]
    useful_out: dict[str, np.ndarray]

    def dead(self, layer: str) -> np.ndarray:
        """Boolean: the units of ``layer`` with no path from an input or none to an output."""
        return ~self.reached_out[layer] | ~self.useful_out[layer]


def unit_matrices(model: Model) -> dict[str, np.ndarray]:
    """Layer name -> its ``(units, in_units)`` boolean connectivity (masks applied)."""
    return {layer.name: layer.unit_matrix(model.effective_weight(layer)) for layer in model.layers}


def edge_positions(edge: Edge, size: int) -> np.ndarray | None:
    """The edge's unit map where each position reads its own source unit; None: all of them."""
    positions = edge.positions
    if positions is None or len(positions) != size:
        return None
    return np.asarray(positions)


def liveness(layers: list[Layer], matrices: dict[str, np.ndarray]) -> Liveness:
    """Forward and backward reachability over the layers.

    Args:
        layers: the layers in graph order.
        matrices: layer name -> its ``(units, in_units)`` boolean connectivity.

    Returns:
        The :class:`Liveness`.
    """
    reached_in: dict[str, np.ndarray] = {}
    reached_out: dict[str, np.ndarray] = {}
    for layer in layers:
        reached = np.zeros(layer.in_units, dtype=bool)
        for edge in layer.fed_by:
            source = None if edge.source.startswith("input:") else reached_out.get(edge.source)
            m = edge_positions(edge, layer.in_units)
            if m is None:
                if source is None or source.any():
                    reached[:] = True
                continue
            hit = m >= 0
            reached[hit] |= True if source is None else source[m[hit]]
        reached_in[layer.name] = reached
        reached_out[layer.name] = np.asarray((matrices[layer.name] & reached[None, :]).any(axis=1))
    by_name = {layer.name: layer for layer in layers}
    useful_in: dict[str, np.ndarray] = {}
    useful_out: dict[str, np.ndarray] = {}
    for layer in reversed(layers):
        useful = np.zeros(layer.units, dtype=bool)
        for edge in layer.feeds:
            if edge.target.startswith("output:"):
                if edge.positions is None:
                    useful[:] = True
                else:
                    read = np.asarray(edge.positions)
                    useful[read[read >= 0]] = True
                continue
            m = edge_positions(edge, by_name[edge.target].in_units)
            wanted = useful_in.get(edge.target)
            if m is None or wanted is None:
                if wanted is None or wanted.any():
                    useful[:] = True
                continue
            useful[m[(m >= 0) & wanted]] = True
        useful_out[layer.name] = useful
        useful_in[layer.name] = np.asarray((matrices[layer.name] & useful[:, None]).any(axis=0))
    return Liveness(reached_in, reached_out, useful_in, useful_out)


def dead_units(model: Model) -> dict[str, int]:
    """Dead units per layer, as the unit graph counts them (every non-skip layer listed).

    An N2NSkip layer's units are its target layer's (``Layer.merges_into``): a target unit
    is reached when its own inputs or its skip's reach it.

    Args:
        model: the model (masks applied).

    Returns:
        Layer name -> number of units with no path from an input or none to an output.
    """
    layers = model.layers
    alive = liveness(layers, unit_matrices(model))
    reached = {la.name: alive.reached_out[la.name].copy() for la in layers if not la.is_skip}
    for layer in layers:
        if layer.is_skip and layer.merges_into in reached:
            target = reached[layer.merges_into]
            if len(target) == layer.units:
                target |= alive.reached_out[layer.name]
    return {name: int((~units | ~alive.useful_out[name]).sum()) for name, units in reached.items()}
