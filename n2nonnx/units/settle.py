"""A consistent removal: narrow a set of candidate units until removing them is exact.

Units joined element-wise (a residual Add, an N2NSkip Add) go together or stay together;
a consumer's input position goes only if every source feeding it goes and the consumer may
lose it; a grouped convolution loses whole groups only; a consumer keeps at least one input.
The result is always a valid :func:`~n2nonnx.units.remove_units` request.
"""

from __future__ import annotations

import numpy as np

from n2nonnx.graph.layers import Layer
from n2nonnx.units.reach import edge_positions

# layer name -> (source layer name, unit map into this layer or None) for each feeding layer
_Sources = dict[str, list[tuple[str, np.ndarray | None]]]


def settle_removal(
    layers: list[Layer],
    by_name: dict[str, Layer],
    removed: dict[str, np.ndarray],
    droppable: dict[str, np.ndarray],
) -> None:
    """Shrink the candidate set until it is a consistent removal (in place).

    Args:
        layers: the layers in graph order.
        by_name: layer name -> layer.
        removed: layer name -> boolean units to remove (narrowed in place).
        droppable: layer name -> boolean input positions that may lose their source.
    """
    changed = True
    while changed:
        changed, sources_at = _settle_edges(layers, by_name, removed, droppable)
        for target_name, sources in sources_at.items():
            changed |= _settle_target(by_name[target_name], sources, removed)


def _settle_edges(
    layers: list[Layer],
    by_name: dict[str, Layer],
    removed: dict[str, np.ndarray],
    droppable: dict[str, np.ndarray],
) -> tuple[bool, _Sources]:
    """Keep the units that feed a graph output or a position that may not be dropped.

    Args:
        layers: the layers in graph order.
        by_name: layer name -> layer.
        removed: layer name -> boolean units to remove (narrowed in place).
        droppable: layer name -> boolean input positions that may lose their source.

    Returns:
        Whether a candidate layer unit was kept (outputs do not count), and each
        consumer's sources.
    """
    changed = False
    sources_at: _Sources = {}
    for layer in layers:
        for edge in layer.feeds:
            if edge.target.startswith("output:") or edge.target not in by_name:
                if edge.positions is None:
                    removed[layer.name][:] = False
                else:
                    read = np.asarray(edge.positions)
                    removed[layer.name][read[read >= 0]] = False
                continue
            target = by_name[edge.target]
            m = edge_positions(edge, target.in_units)
            sources_at.setdefault(edge.target, []).append((layer.name, m))
            ok = droppable[edge.target]
            if m is None:
                if not ok.all():
                    changed |= bool(removed[layer.name].any())
                    removed[layer.name][:] = False
                continue
            bad = m[(m >= 0) & ~ok]
            if removed[layer.name][bad].any():
                removed[layer.name][bad] = False
                changed = True
    return changed, sources_at


def _settle_target(
    target: Layer, sources: list[tuple[str, np.ndarray | None]], removed: dict[str, np.ndarray]
) -> bool:
    """Make one consumer's sources agree: an input position goes only if all its sources go.

    Args:
        target: the consuming layer.
        sources: (source layer name, unit map or None) for each layer feeding it.
        removed: layer name -> boolean units to remove (narrowed in place).

    Returns:
        Whether any unit was kept that was to be removed.
    """
    changed = False
    gone = np.ones(target.in_units, dtype=bool)
    fed = np.zeros(target.in_units, dtype=bool)
    for source, m in sources:
        if m is None:
            gone &= removed[source].all()
            fed[:] = True
            continue
        hit = m >= 0
        fed |= hit
        gone[hit] &= removed[source][m[hit]]
    for source, m in sources:  # a position some sources leave and others keep: keep all
        if m is None:
            if not gone[fed].all() and removed[source].any():
                removed[source][:] = False
                changed = True
            continue
        hit = m >= 0
        keep = hit & ~gone
        if removed[source][m[keep]].any():
            removed[source][m[keep]] = False
            changed = True
    if (gone & fed).all() and not removed[target.name].all():
        # The target keeps units but would read nothing: keep one input position.
        for source, m in sources:
            if m is None:
                removed[source][:] = False
            elif (m >= 0).any():
                removed[source][m[m >= 0][0]] = False
        return True
    if target.groups > 1:
        changed |= _whole_groups(target, removed, gone & fed, sources)
    return changed


def _whole_groups(target: Layer, removed, gone_inputs: np.ndarray, sources) -> bool:
    """A grouped conv loses whole groups: its inputs go only with all of the group's units."""
    per_in, per_out = target.in_units // target.groups, target.units // target.groups
    mine = removed[target.name]
    changed = False
    for group in range(target.groups):
        outs = mine[group * per_out : (group + 1) * per_out]
        if outs.any() and not outs.all():
            outs[:] = False
            changed = True
        if not outs.all() and gone_inputs[group * per_in : (group + 1) * per_in].any():
            for source, m in sources:
                if m is None:
                    continue
                block = m[group * per_in : (group + 1) * per_in]
                block = block[block >= 0]
                if removed[source][block].any():
                    removed[source][block] = False
                    changed = True
    return changed
