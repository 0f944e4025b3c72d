"""Input checks of structured pruning, done before any long work."""

from __future__ import annotations

import math
import warnings

import numpy as np

from n2nonnx import metadata
from n2nonnx.errors import InvalidModelError
from n2nonnx.model import Model


def check_finite_weights(model: Model) -> None:
    """Refuse a model whose floating initializers hold NaN or infinite values.

    Every unit score (activations, L1 norms, the constraints' fits) of such a model is NaN,
    and a model cut by NaN scores is no pruning of it.

    Raises:
        InvalidModelError: naming the first such initializer and how many values it holds.
    """
    for name in model.initializer_names:
        array = model.initializer(name)
        if array.dtype.kind not in "fc" or array.size == 0:
            continue
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise InvalidModelError(
                f"initializer {name!r} holds {bad} NaN or infinite value(s) of {array.size}; "
                "structured pruning scores the units of a trained model: pass the model before "
                "it diverged (or retrain it)"
            )


def looks_untrained(model: Model) -> str | None:
    """Why the model seems freshly initialised, or None.

    Heuristic: no ``train`` stage in its provenance *and* either every layer's weights lie
    within PyTorch's default init bound ``1 / sqrt(fan_in)``, or every BatchNorm still has
    its initial running statistics (mean 0, variance 1). A model trained elsewhere and
    exported has no ``train`` stage, so the stage alone is not enough.
    """
    if metadata.stages(model.proto, "train"):
        return None
    bounded = all(
        float(np.abs(model.effective_weight(layer)).max())
        <= 1.0001 / math.sqrt(max(layer.fan_in, 1))
        for layer in model.layers
    )
    if bounded:
        return "every layer's weights are within the default initialisation bound 1/sqrt(fan_in)"
    fresh_norms = []
    for node in model.proto.graph.node:
        if node.op_type == "BatchNormalization" and len(node.input) >= 5:
            try:
                mean, var = model.initializer(node.input[3]), model.initializer(node.input[4])
            except KeyError:
                continue
            fresh_norms.append(bool(np.all(mean == 0) and np.all(var == 1)))
    if fresh_norms and all(fresh_norms):
        return "every BatchNorm still has its initial running statistics (mean 0, variance 1)"
    return None


def warn_if_untrained(model: Model) -> None:
    """Warn (``UserWarning``) when :func:`looks_untrained` says so."""
    reason = looks_untrained(model)
    if reason:
        warnings.warn(
            f"the model looks untrained ({reason}; no 'train' stage in its metadata): structured "
            "pruning scores units of a trained network, and on a fresh one they are meaningless",
            UserWarning,
            stacklevel=3,
        )
