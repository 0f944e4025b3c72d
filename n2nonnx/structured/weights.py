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
    if layer.op == "ConvTranspose":
        per_out = layer.units // layer.groups
        blocks = weight.reshape(layer.groups, weight.shape[0] // layer.groups, per_out, -1).mean(
            axis=3
        )
        matrix = np.full((layer.units, layer.in_units), np.nan)
        for group in range(layer.groups):
            rows = slice(group * per_out, (group + 1) * per_out)
            cols = slice(group * blocks.shape[1], (group + 1) * blocks.shape[1])
            matrix[rows, cols] = blocks[group].T
        return matrix
    moved = np.moveaxis(weight, (layer.unit_axis, layer.in_axis), (0, 1))
    dense = moved.reshape(moved.shape[0], moved.shape[1], -1).mean(axis=2)
    if layer.groups == 1:
        return dense
    per_in, per_out = layer.in_units // layer.groups, layer.units // layer.groups
    matrix = np.full((layer.units, layer.in_units), np.nan)
    for group in range(layer.groups):
        rows = slice(group * per_out, (group + 1) * per_out)
        matrix[rows, group * per_in : (group + 1) * per_in] = dense[rows]
    return matrix
