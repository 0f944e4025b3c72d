"""N2NSkip budget: split the non-zero weights between sequential layers and skip pairs.

The total budget is ``round(density x dense sequential weights)``; the skip pairs get
``round(skip_share x total)`` of it and the sequential layers the rest. Integer splits use
the largest-remainder method, so every count is exact and the parts add up to the whole.
Where the skip connections go is :mod:`~n2nonnx.skip.sampling` (random) and
:mod:`~n2nonnx.skip.placement` (connectivity-guided).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def apportion(total: int, weights: Sequence[float], caps: Sequence[int] | None = None) -> list[int]:
    """Split ``total`` into integers proportional to ``weights`` (largest remainder), capped.

    Args:
        total: the integer to split (at most ``sum(caps)`` when capped).
        weights: non-negative shares.
        caps: the most each part may get (None: no cap).

    Returns:
        Integer parts summing to ``min(total, sum(caps))``.
    """
    count = len(weights)
    parts = np.zeros(count, dtype=np.int64)
    limit = (
        np.asarray(caps, dtype=np.int64)
        if caps is not None
        else np.full(count, np.iinfo(np.int64).max)
    )
    remaining = int(min(total, limit.sum())) if count else 0
    open_ = np.asarray(weights, dtype=np.float64) > 0
    while remaining > 0 and open_.any():
        share = np.where(open_, np.asarray(weights, dtype=np.float64), 0.0)
        exact = remaining * share / share.sum()
        floor = np.floor(exact).astype(np.int64)
        left = remaining - int(floor.sum())
        order = np.argsort(-(exact - floor), kind="stable")
        floor[order[:left]] += 1
        grant = np.minimum(floor, limit - parts)
        parts += grant
        remaining -= int(grant.sum())
        open_ &= parts < limit
    return [int(p) for p in parts]


def trim_masks(
    kept: dict[str, np.ndarray], remove: int, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Drop ``remove`` kept weights at random, per layer in proportion to its kept count.

    Args:
        kept: weight name -> 0/1 mask (all ones for a dense layer), in layer order.
        remove: how many kept weights to drop in all.
        rng: the random generator.

    Returns:
        ``(masks, removed)``: the new masks of the layers that lost weights, and how many
        each lost.
    """
    counts = [int(np.count_nonzero(mask)) for mask in kept.values()]
    return _flip_at_random(kept, apportion(remove, counts, counts), rng, turn_on=False)


def regrow_masks(
    kept: dict[str, np.ndarray], add: int, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Turn ``add`` pruned weights back on at random, per layer in proportion to its pruned count.

    Args:
        kept: weight name -> 0/1 mask, in layer order.
        add: how many pruned weights to keep again in all.
        rng: the random generator.

    Returns:
        ``(masks, added)``: the new masks of the layers that gained weights, and how many each got.
    """
    pruned = [int(np.size(mask) - np.count_nonzero(mask)) for mask in kept.values()]
    return _flip_at_random(kept, apportion(add, pruned, pruned), rng, turn_on=True)


def _flip_at_random(
    kept: dict[str, np.ndarray],
    per_layer: Sequence[int],
    rng: np.random.Generator,
    *,
    turn_on: bool,
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Flip ``per_layer[i]`` random entries of the i-th mask: zeros to one, or ones to zero.

    Args:
        kept: weight name -> 0/1 mask, in layer order.
        per_layer: how many entries to flip in each mask.
        rng: the random generator.
        turn_on: flip pruned entries on (True) or kept entries off (False).

    Returns:
        ``(masks, flipped)``: the new masks of the layers that changed, and how many
        entries each had flipped.
    """
    masks, flipped = {}, {}
    for (name, old), count in zip(kept.items(), per_layer, strict=True):
        if count == 0:
            continue
        mask = np.array(old, dtype=np.float32, copy=True)
        flat = mask.reshape(-1)
        candidates = np.flatnonzero(flat == 0) if turn_on else np.flatnonzero(flat)
        flat[rng.choice(candidates, size=count, replace=False)] = 1.0 if turn_on else 0.0
        masks[name] = mask
        flipped[name] = count
    return masks, flipped


def apportion_with_minimum(
    total: int, weights: Sequence[float], caps: Sequence[int], minimum: int
) -> tuple[list[int], list[int]]:
    """:func:`apportion`, then drop the parts below ``minimum`` and split ``total`` again.

    The smallest part goes first (ties: the smaller weight, then the later position); the
    others share the whole ``total`` again, so the sum never changes. Stops when every
    part left holds at least ``minimum``, when one part is left (it then holds the whole
    ``total``, even below ``minimum``), or when the parts left could not hold ``total``
    within their caps (such a part stays below ``minimum``).

    Args:
        total: the integer to split (at most ``sum(caps)``).
        weights: non-negative shares.
        caps: the most each part may get.
        minimum: the least a kept part should get (1 or less: no minimum).

    Returns:
        ``(parts, dropped)``: the parts (0 for a dropped one) and the dropped positions,
        in the order they were dropped.
    """
    parts = apportion(total, weights, caps)
    if minimum <= 1:
        return parts, []
    alive = [i for i, part in enumerate(parts) if part > 0]
    dropped = [i for i, part in enumerate(parts) if part == 0 and weights[i] > 0]
    room = sum(caps[i] for i in alive)
    while len(alive) > 1:
        low = [i for i in alive if parts[i] < minimum]
        if not low:
            break
        victim = min(low, key=lambda i: (parts[i], weights[i], -i))
        if room - caps[victim] < total:  # the others cannot hold the budget
            break
        alive.remove(victim)
        room -= caps[victim]
        dropped.append(victim)
        again = apportion(total, [weights[i] for i in alive], [caps[i] for i in alive])
        parts = [0] * len(parts)
        for i, part in zip(alive, again, strict=True):
            parts[i] = part
    return parts, dropped
