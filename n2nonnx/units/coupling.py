"""Which units can be removed, and which must go together: coupled groups from the layer view.

Units of two layers that reach the same input position of a later layer (a residual Add
joins them) must be removed together; so must a depthwise convolution's group and the
input channel it reads. These couplings are found from the layer view's edges
(:attr:`Edge.unit_map`) with a union-find over ``(layer, unit)`` pairs. A *component* is
one such set: the unit of removal.

Units are *fixed* (never removed) when they reach a graph output, belong to an N2NSkip
branch (or receive one), feed an edge whose unit map could not be followed, or feed a
grouped convolution with several input channels per group, or cannot be removed through
the ops they reach (:attr:`~n2nonnx.graph.Layer.removal_blocker`, which the op rules of
:mod:`n2nonnx.graph.units` decide before anything is removed: nothing is tried and caught).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from n2nonnx.graph.layers import Layer
from n2nonnx.model import Model

Unit = tuple[str, int]


@dataclass(frozen=True)
class Component:
    """Units removed together.

    Attributes:
        units: ``(layer name, unit index)`` pairs, sorted.
        fixed: the component cannot be removed (a reason is in ``why``).
        why: why it is fixed ("" when it is not).
    """

    units: tuple[Unit, ...]
    fixed: bool = False
    why: str = ""

    @property
    def layers(self) -> tuple[str, ...]:
        """The layers it touches, sorted, without repeats."""
        return tuple(sorted({name for name, _ in self.units}))

    def count(self, layer: str) -> int:
        """How many of ``layer``'s units it holds."""
        return sum(1 for name, _ in self.units if name == layer)


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[Unit, Unit] = {}

    def find(self, item: Unit) -> Unit:
        self.parent.setdefault(item, item)
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, a: Unit, b: Unit) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def consumer_columns(target: Layer, source: str) -> dict[int, np.ndarray]:
    """For each unit of ``source``: the input positions of ``target`` it feeds."""
    columns: dict[int, list[int]] = defaultdict(list)
    for edge in target.fed_by:
        if edge.source != source or edge.positions is None:
            continue
        for position, unit in enumerate(edge.positions.tolist()):
            if unit >= 0:
                columns[unit].append(position)
    return {unit: np.asarray(sorted(set(p)), dtype=np.int64) for unit, p in columns.items()}


def find_components(model: Model) -> list[Component]:
    """The removable components of a model, and the fixed ones.

    Args:
        model: the model.

    Returns:
        Every unit of every layer in exactly one component, in a deterministic order.
    """
    layers = {layer.name: layer for layer in model.layers}
    sets = _UnionFind()
    fixed = _fixed_units(layers)
    for target in layers.values():
        sources = _mapped_sources(target, layers)
        _couple_joined_inputs(target, sources, sets)
        if target.groups > 1:
            _couple_groups(target, sources, sets, fixed, layers)
    components = _collect_components(layers, sets, fixed)
    return _keep_one_unit_per_layer(components, layers)


def _fixed_units(layers: dict[str, Layer]) -> dict[Unit, str]:
    """The units that can never be removed, each with the reason, before any probing."""
    fixed: dict[Unit, str] = {}
    for layer in layers.values():
        if layer.is_skip or layer.merges_into is not None:
            _fix_layer(fixed, layer, "N2NSkip branch")
        for edge in layer.feeds:
            if edge.target.startswith("output:"):
                _fix_layer(fixed, layer, "reaches a graph output")
            elif edge.positions is None:
                _fix_layer(fixed, layer, f"wiring to {edge.target!r} not traced")
        for edge in layer.fed_by:
            if edge.source in layers and layers[edge.source].is_skip:
                _fix_layer(fixed, layer, "receives an N2NSkip branch")
        if layer.removal_blocker is not None:
            _fix_layer(fixed, layer, layer.removal_blocker)
    return fixed


def _mapped_sources(target: Layer, layers: dict[str, Layer]) -> list[tuple[str, np.ndarray]]:
    """``(source layer, unit map)`` of each traced edge from a layer into ``target``."""
    return [
        (edge.source, edge.positions)
        for edge in target.fed_by
        if edge.source in layers and edge.positions is not None
    ]


def _couple_joined_inputs(
    target: Layer, sources: list[tuple[str, np.ndarray]], sets: _UnionFind
) -> None:
    """Units joined at the same input position of ``target`` are coupled (residual Add)."""
    for position in range(target.in_units):
        joined = [
            (source, int(unit_map[position]))
            for source, unit_map in sources
            if unit_map[position] >= 0
        ]
        for other in joined[1:]:
            sets.union(joined[0], other)


def _collect_components(
    layers: dict[str, Layer], sets: _UnionFind, fixed: dict[Unit, str]
) -> list[Component]:
    """One component per union-find set, in layer order, fixed if any of its units is."""
    members: dict[Unit, list[Unit]] = defaultdict(list)
    for name, layer in layers.items():
        for unit in range(layer.units):
            members[sets.find((name, unit))].append((name, unit))
    components = []
    for root in sorted(members, key=lambda u: (layers[u[0]].index, u[1])):
        units = tuple(sorted(members[root], key=lambda u: (layers[u[0]].index, u[1])))
        reasons = sorted({fixed[u] for u in units if u in fixed})
        components.append(Component(units, bool(reasons), "; ".join(reasons)))
    return components


def _fix_layer(fixed: dict[Unit, str], layer: Layer, reason: str) -> None:
    for unit in range(layer.units):
        fixed.setdefault((layer.name, unit), f"{layer.name}: {reason}")


def _couple_groups(
    target: Layer,
    sources: list[tuple[str, np.ndarray]],
    sets: _UnionFind,
    fixed: dict[Unit, str],
    layers: dict[str, Layer],
) -> None:
    per_in, per_out = target.in_units // target.groups, target.units // target.groups
    if per_in != 1:
        _fix_layer(fixed, target, "grouped convolution")
        for source, _ in sources:
            _fix_layer(fixed, layers[source], f"feeds grouped convolution {target.name!r}")
        return
    # Depthwise-like: input channel g and the outputs of group g go together.
    for source, unit_map in sources:
        for group in range(target.groups):
            unit = int(unit_map[group])
            if unit < 0:
                continue
            for out in range(group * per_out, (group + 1) * per_out):
                sets.union((source, unit), (target.name, out))


def _keep_one_unit_per_layer(
    components: list[Component], layers: dict[str, Layer]
) -> list[Component]:
    """A layer whose units all sit in one component would vanish with it: fix it."""
    result = []
    for component in components:
        whole = [name for name in component.layers if component.count(name) == layers[name].units]
        if whole and not component.fixed:
            component = Component(component.units, True, f"would remove every unit of {whole[0]!r}")
        result.append(component)
    return result
