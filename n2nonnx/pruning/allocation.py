"""Layer-wise allocation: how many weights each layer keeps, and which.

* ``global``: one threshold over all layers' scores (top-k over the concatenation).
* ``uniform``: every layer keeps the same fraction.
* ``erk``: Erdos-Renyi-Kernel: a layer's density is proportional to
  ``sum(weight dims) / prod(weight dims)``, scaled so the total is exact; layers whose
  density would exceed 1 are kept dense and the rest rescaled.

Counts are exact: the kept total is ``round(density x total)``; per-layer schemes
distribute the rounding by largest remainder, so each layer is within one of its ideal.
Layers with a fixed density (``fixed``) are taken out of the budget first.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from n2nonnx.errors import InvalidArgumentError
from n2nonnx.pruning.options import ALLOCATIONS

__all__ = ["ALLOCATIONS", "layer_counts", "masks_from_scores"]


def layer_counts(
    sizes: Mapping[str, int],
    shapes: Mapping[str, tuple[int, ...]],
    density: float,
    allocation: str,
    fixed: Mapping[str, float] | None = None,
) -> dict[str, int] | None:
    """Weights to keep per layer for the per-layer schemes (None for ``global``).

    Args:
        sizes: weight name -> number of weights.
        shapes: weight name -> weight shape (for ERK).
        density: overall target density of all the named weights.
        allocation: ``global``, ``uniform`` or ``erk``.
        fixed: weight name -> density fixed for that layer (first/last layers).

    Returns:
        Weight name -> kept count, summing to ``round(density x sum(sizes))``.
    """
    if allocation not in ALLOCATIONS:
        raise InvalidArgumentError(
            f"unknown allocation {allocation!r}; choose from {', '.join(ALLOCATIONS)}"
        )
    fixed = dict(fixed or {})
    total = sum(sizes.values())
    budget = int(round(density * total))
    counts = {name: int(round(fixed[name] * sizes[name])) for name in fixed}
    remaining = budget - sum(counts.values())
    free = [name for name in sizes if name not in fixed]
    if remaining < 0 or (free and remaining > sum(sizes[n] for n in free)):
        raise InvalidArgumentError(
            f"density {density:g} cannot be met with the fixed first/last layer densities; "
            "lower --first-last-density or raise --density"
        )
    if not free:
        return counts
    if allocation == "global":
        return None if not fixed else {**counts, **_global_marker(free)}
    if allocation == "uniform":
        weights = {name: float(sizes[name]) for name in free}
    else:
        weights = {name: float(sizes[name]) * _erk_factor(shapes[name]) for name in free}
    counts.update(_proportional(weights, {n: sizes[n] for n in free}, remaining))
    return counts


def _global_marker(free: list[str]) -> dict[str, int]:
    return {name: -1 for name in free}  # -1: decided by the global threshold


def _erk_factor(shape: tuple[int, ...]) -> float:
    return float(sum(shape)) / float(np.prod(shape))


def _proportional(weights: dict[str, float], caps: dict[str, int], budget: int) -> dict[str, int]:
    """Split ``budget`` in proportion to ``weights``, capped at ``caps``, exactly."""
    counts: dict[str, int] = {}
    active = dict(weights)
    left = budget
    while active:
        scale = left / sum(active.values()) if sum(active.values()) else 0.0
        over = [n for n, w in active.items() if w * scale >= caps[n]]
        if not over:
            break
        for name in over:  # dense layers: take them out and rescale the others
            counts[name] = caps[name]
            left -= caps[name]
            del active[name]
    if active:
        scale = left / sum(active.values())
        ideal = {n: w * scale for n, w in active.items()}
        floors = {n: int(np.floor(v)) for n, v in ideal.items()}
        short = left - sum(floors.values())
        order = sorted(active, key=lambda n: (-(ideal[n] - floors[n]), n))
        for name in order[:short]:
            floors[name] += 1
        counts.update(floors)
    return counts


def masks_from_scores(
    scores: Mapping[str, np.ndarray],
    density: float,
    counts: Mapping[str, int] | None,
) -> dict[str, np.ndarray]:
    """Keep the highest scores: per layer (``counts``) and/or globally (count -1 / None).

    Ties are broken by position (stable), so equal inputs give equal masks.
    """
    for name, score in scores.items():
        if np.isnan(score).any() or np.isposinf(score).any():
            raise InvalidArgumentError(
                f"the scores of {name!r} contain NaN or +inf (the criterion overflowed or the data "
                "holds NaN); check the data and options, or use another method"
            )
    masks: dict[str, np.ndarray] = {}
    global_names = [n for n in scores if counts is None or counts.get(n, -1) == -1]
    for name, score in scores.items():
        if name in global_names:
            continue
        masks[name] = _top_k_mask(score.ravel(), counts[name]).reshape(score.shape)  # type: ignore[index]
    if global_names:
        total = sum(scores[n].size for n in scores)
        budget = int(round(density * total)) - sum(int(m.sum()) for m in masks.values())
        flat = np.concatenate([scores[n].ravel() for n in global_names])
        keep = _top_k_mask(flat, budget)
        offset = 0
        for name in global_names:
            size = scores[name].size
            masks[name] = keep[offset : offset + size].reshape(scores[name].shape)
            offset += size
    return masks


def _top_k_mask(values: np.ndarray, k: int) -> np.ndarray:
    """1.0 on the ``k`` largest values; among equal values the lower positions win.

    The same set as a stable descending sort, in linear time (a partition finds the k-th
    largest value; ties at it are taken in index order).
    """
    mask = np.zeros(values.size, dtype=np.float32)
    k = max(0, min(int(k), values.size))
    if k == 0:
        return mask
    if k == values.size:
        mask[:] = 1.0
        return mask
    values = values.astype(np.float64, copy=False)
    kth = np.partition(values, values.size - k)[values.size - k]
    above = values > kth
    mask[above] = 1.0
    ties = np.flatnonzero(values == kth)[: k - int(above.sum())]
    mask[ties] = 1.0
    return mask
