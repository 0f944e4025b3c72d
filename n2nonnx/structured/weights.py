"""Weights as SNACS reads them: min-max normalised over the network, averaged over the kernel."""

from __future__ import annotations

import numpy as np

from n2nonnx.graph.layers import Layer
from n2nonnx.model import Model


def network_range(model: Model) -> tuple[float, float]:
    """Smallest and largest weight over every layer of the network (masks applied)."""
    low, high = np.inf, -np.inf
    for layer in model.layers:
        weight = model.effective_weight(layer)
        low, high = min(low, float(weight.min())), max(high, float(weight.max()))
    return low, high


def unit_matrix(model: Model, layer: Layer, value_range: tuple[float, float]) -> np.ndarray:
    """The layer's weights as a ``(units, in_units)`` matrix of values in [0, 1].

    The weights are min-max normalised over the network and averaged over the kernel; the
    matrix is NaN where a grouped convolution has no connection.

    Args:
        model: the model holding the weights (masks applied).
        layer: the layer whose weights are read.
        value_range: the network's ``(lowest, highest)`` weight (see :func:`network_range`).

    Returns:
        The ``(units, in_units)`` float64 matrix.
    """
    low, high = value_range
    weight = (np.asarray(model.effective_weight(layer), dtype=np.float64) - low) / max(
        high - low, 1e-12
    )
    return layer.unit_matrix(weight, "mean", fill=np.nan)
