"""N2NSkip budget: split the non-zero weights between sequential layers and skip pairs, and sample.

The total budget is ``round(density x dense sequential weights)``; the skip pairs get
``round(skip_share x total)`` of it and the sequential layers the rest. Integer splits use
the largest-remainder method, so every count is exact and the parts add up to the whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from n2nonnx.skip.candidates import Pair

SAMPLING_MODES = ("block", "uniform")


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


@dataclass(frozen=True)
class Connections:
    """The sampled connections of one pair, in canonical layout (target, source, *kernel).

    Attributes:
        used_sources: source units the branch gathers (each has at least one connection).
        mask: 0/1 mask of shape ``(target units, len(used_sources), *kernel)``.
        nonzeros: connections (``mask.sum()``).
    """

    used_sources: np.ndarray
    mask: np.ndarray
    nonzeros: int


def block_widths(pairs: Sequence[Pair], counts: Sequence[int], align: int = 8) -> list[int]:
    """Source units per pair for ``block`` sampling, for the pairs into one target.

    Each pair needs ``ceil(nonzeros / (target units x kernel))`` source units; the widths
    of a target's pairs are then widened (where sources and non-zeros allow) until their
    sum is a multiple of ``align``, the channel block of onnxruntime's fast conv layout
    (it pads the input channels of a conv to that block anyway, so the wider, sparser
    block costs nothing more and the conv keeps the fast layout).

    Args:
        pairs: the pairs of one target.
        counts: their non-zeros.
        align: the channel block (1: no widening).

    Returns:
        The widths, one per pair.
    """
    widths = []
    for pair, count in zip(pairs, counts, strict=True):
        per_source = pair.target.units * int(np.prod(pair.kernel, dtype=np.int64))
        widths.append(min(pair.source.units, max(1, -(-count // per_source))))
    if not pairs or pairs[0].kind not in ("conv",) or align <= 1:
        return widths
    short = (-sum(widths)) % align
    while short:
        room = [
            i
            for i, (pair, count) in enumerate(zip(pairs, counts, strict=True))
            if widths[i] < min(pair.source.units, count)
        ]
        if not room:
            break
        best = max(room, key=lambda i: (min(pairs[i].source.units, counts[i]) - widths[i], -i))
        widths[best] += 1
        short -= 1
    return widths


def sample_connections(
    pair: Pair, nonzeros: int, sampling: str, rng: np.random.Generator, width: int | None = None
) -> Connections:
    """Sample ``nonzeros`` connections for ``pair``.

    ``uniform`` (the paper): positions uniformly at random over the whole dense skip tensor,
    so nearly every source unit is touched. ``block`` (the default, fast): the connections
    fill a random subset of ``width`` source units (each gets at least one connection),
    every target unit receiving from that subset, so the branch's dense compute is about
    its number of non-zeros.

    Args:
        pair: the pair.
        nonzeros: how many connections (1 .. ``pair.dense_size``).
        sampling: ``"block"`` or ``"uniform"``.
        rng: the random generator.
        width: source units of a block (default ``ceil(nonzeros / (targets x kernel))``).

    Returns:
        The :class:`Connections`.
    """
    targets, sources = pair.target.units, pair.source.units
    kernel = tuple(pair.kernel)
    per_source = targets * int(np.prod(kernel, dtype=np.int64))
    if sampling == "uniform":
        candidates = np.arange(sources)
        block = (targets, sources, *kernel)
        flat = np.zeros(int(np.prod(block, dtype=np.int64)), dtype=np.float32)
        flat[rng.choice(flat.size, size=nonzeros, replace=False)] = 1.0
    else:
        width = width or min(sources, -(-nonzeros // per_source))
        candidates = np.sort(rng.choice(sources, size=width, replace=False))
        block = (targets, width, *kernel)
        # One connection per chosen source unit first, the rest uniformly in the block.
        cells = np.arange(width * per_source).reshape(width, per_source)
        first = cells[np.arange(width), rng.integers(0, per_source, size=width)]
        rest = np.setdiff1d(np.arange(width * per_source), first, assume_unique=True)
        chosen = np.concatenate([first, rng.choice(rest, size=nonzeros - width, replace=False)])
        by_source = np.zeros(width * per_source, dtype=np.float32)
        by_source[chosen] = 1.0
        # cells are (source, target x kernel): move the source axis to position 1.
        flat = np.moveaxis(by_source.reshape(width, targets, *kernel), 0, 1).reshape(-1)
    mask = flat.reshape(block)
    used = np.flatnonzero(mask.reshape(targets, len(candidates), -1).any(axis=(0, 2)))
    return Connections(
        candidates[used].astype(np.int64), np.ascontiguousarray(mask[:, used]), int(nonzeros)
    )
