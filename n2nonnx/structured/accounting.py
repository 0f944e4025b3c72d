"""Parameters and FLOPs of a model, as structured pruning reports them."""

from __future__ import annotations

import numpy as np

from n2nonnx.model import Model


def layer_flops(model: Model) -> int:
    """Floating-point operations of one sample through the layers (2 per multiply-add).

    Conv / ConvTranspose: ``2 * units * in_units / groups * kernel * output positions``;
    Gemm / MatMul: ``2 * units * in_units * positions`` (tokens). BatchNorm, activations,
    pooling and additions are left out (a few percent in these models).
    """
    total = 0
    for layer in model.layers:
        kernel = int(np.prod(layer.kernel_size)) if layer.kernel_size else 1
        positions = int(np.prod(layer.spatial_out)) if layer.spatial_out else 1
        if layer.op == "ConvTranspose":
            positions = int(np.prod(layer.spatial_in)) if layer.spatial_in else 1
        total += 2 * layer.units * (layer.in_units // layer.groups) * kernel * positions
    return int(total)
