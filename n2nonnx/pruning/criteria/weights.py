"""Magnitude pruning: keep the largest |w|."""

from __future__ import annotations

import numpy as np

from n2nonnx.pruning.registry import ScoringContext, criterion


@criterion("magnitude", needs_data=False, summary="keep the largest |w|")
def magnitude_scores(context: ScoringContext) -> dict[str, np.ndarray]:
    """Score each weight by its magnitude (masked entries score 0).

    Args:
        context: the scoring context; only ``model`` and ``weights`` are read.

    Returns:
        Weight name -> ``|w|`` of the effective (masked) weight, in float64.
    """
    return {
        name: np.abs(context.model.effective_weight(name).astype(np.float64))
        for name in context.weights
    }
