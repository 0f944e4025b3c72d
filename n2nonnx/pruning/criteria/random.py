"""Random pruning (RP), plain and expander-style (equal fan-in per output unit)."""

from __future__ import annotations

import numpy as np

from n2nonnx.pruning.registry import ScoringContext, criterion


@criterion(
    "random", needs_data=False, summary="uniformly random mask at the allocated per-layer density"
)
def random_scores(context: ScoringContext) -> dict[str, np.ndarray]:
    """Score each weight with an independent uniform draw from ``context.rng``.

    Args:
        context: the scoring context; ``model``, ``weights`` and ``rng`` are read.

    Returns:
        Weight name -> uniform [0, 1) scores of the weight's shape.
    """
    return {
        name: context.rng.random(context.model.initializer(name).shape) for name in context.weights
    }


@criterion(
    "expander",
    needs_data=False,
    summary="random, but every output unit keeps the same number of inputs (RP of the N2NSkip paper)",
)
def expander_scores(context: ScoringContext) -> dict[str, np.ndarray]:
    """Scores whose per-layer top-k gives each unit floor or ceil of k / units inputs.

    Within each unit the inputs get a random rank; the score is minus the rank, so the
    k best take rank 0 of every unit first, then rank 1, and so on. A random fraction
    per unit decides which units get the remainder.
    """
    model = context.model
    scores = {}
    for name in context.weights:
        layer = model.layer(name)
        weight = model.initializer(name)
        # the weight's shape, units first (annotated: numpy's stubs type
        # np.empty(tuple[Any, ...]) as a 0-d array)
        empty = np.empty(weight.shape, dtype=np.float64)
        moved: np.ndarray = np.moveaxis(empty, layer.unit_axis, 0)
        units, fan_in = moved.shape[0], int(np.prod(moved.shape[1:]))
        ranks = np.argsort(context.rng.random((units, fan_in)), axis=1).argsort(axis=1)
        tiebreak = context.rng.random((units, 1)) * 0.5
        unit_scores = -(ranks.astype(np.float64)) + tiebreak
        scores[name] = np.moveaxis(unit_scores.reshape(moved.shape), 0, layer.unit_axis)
    return scores
