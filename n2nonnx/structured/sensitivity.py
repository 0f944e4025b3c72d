"""Sensitivity: how strongly each unit feeds the next layers, from its outgoing weights.

For a unit ``u`` of layer ``l`` and each layer ``c`` that reads it: ``c``'s weights are
min-max normalised over the network and averaged over the kernel (a ``(units_c, in_c)``
matrix), each row is normalised to sum 1 (a child's inputs share its attention), and
the column(s) ``u`` feeds are summed over the rows; the sums over all readers give
``u``'s sensitivity.

The paper protects the *most* sensitive filters from pruning. The authors' code
(``save_children``) appears to do the opposite: it sorts the children by this score and
skips the *lowest*-scoring 75% when cutting connections. Here the paper's stated intent
is followed: :func:`protected_units` marks the most sensitive ``protect`` fraction of each
layer's units, which are then never removed.
"""

from __future__ import annotations

import math

import numpy as np

from n2nonnx.model import Model
from n2nonnx.structured.weights import network_range, unit_matrix
from n2nonnx.units.coupling import consumer_columns


def sensitivities(
    model: Model, value_range: tuple[float, float] | None = None
) -> dict[str, np.ndarray]:
    """Layer name -> sensitivity of each of its units (0 for units no layer reads).

    Args:
        model: the model.
        value_range: the network's weight range (default: computed).

    Returns:
        One ``(units,)`` array per layer.
    """
    value_range = value_range or network_range(model)
    result = {layer.name: np.zeros(layer.units) for layer in model.layers}
    for child in model.layers:
        sources = {e.source for e in child.fed_by if e.source in result}
        if not sources:
            continue
        matrix = unit_matrix(model, child, value_range)
        rows = np.nansum(matrix, axis=1, keepdims=True)
        share = np.nan_to_num(matrix / np.where(rows > 0, rows, 1.0))
        column_sums = share.sum(axis=0)
        for source in sources:
            for unit, columns in consumer_columns(child, source).items():
                result[source][unit] += float(column_sums[columns].sum())
    return result


def protected_units(scores: np.ndarray, protect: float) -> np.ndarray:
    """Boolean mask of the ``ceil(protect * units)`` most sensitive units (ties: lower index)."""
    count = int(math.ceil(protect * len(scores) - 1e-9))
    mask = np.zeros(len(scores), dtype=bool)
    if count > 0:
        mask[np.argsort(-scores, kind="stable")[:count]] = True
    return mask
