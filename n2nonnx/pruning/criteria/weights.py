"""Magnitude pruning: keep the largest |w|."""

from __future__ import annotations

import numpy as np

from n2nonnx.pruning.registry import ScoringContext, criterion


@criterion("magnitude", needs_data=False, summary="keep the largest |w|")
def magnitude_scores(context: ScoringContext) -> dict[str, np.ndarray]:
    return {
        name: np.abs(context.model.effective_weight(name).astype(np.float64))
        for name in context.weights
    }
