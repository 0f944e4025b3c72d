"""N2NSkip sampling: where a pair's skip connections go inside its dense skip tensor.

Three layouts of the same number of non-zeros (``SAMPLING_MODES``):

* ``block`` (the default, fast): the connections fill a random subset of source units,
  every target unit receiving from that subset, so a branch costs about its non-zeros in a
  dense runtime;
* ``uniform`` (the paper): positions uniformly at random over the whole tensor;
* ``channel`` (the authors' code): expander-style whole kernels; each target unit picks
  ``int(source units x density)`` random source units and keeps their whole ``k x k``
  kernels, the rounding spread over random targets and the last few positions in one
  partial kernel, so the count is exact.

Masks are in canonical layout ``(target units, source units, *kernel)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from n2nonnx.skip.budget import apportion
from n2nonnx.skip.candidates import Pair
from n2nonnx.skip.options import SAMPLING_MODES

__all__ = [
    "SAMPLING_MODES",
    "Connections",
    "block_widths",
    "connections_from_mask",
    "fill_positions",
    "sample_connections",
    "whole_kernels",
]


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


def connections_from_mask(mask: np.ndarray) -> Connections:
    """The :class:`Connections` of a full ``(targets, sources, *kernel)`` 0/1 mask.

    Args:
        mask: the pair's dense mask.

    Returns:
        The connections, gathering only the source units that have one.
    """
    mask = np.asarray(mask, dtype=np.float32)
    used = np.flatnonzero(mask.reshape(mask.shape[0], mask.shape[1], -1).any(axis=(0, 2)))
    return Connections(
        used.astype(np.int64), np.ascontiguousarray(mask[:, used]), int(np.count_nonzero(mask))
    )


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
    """Sample ``nonzeros`` connections for ``pair`` (see the module docstring for the modes).

    Args:
        pair: the pair.
        nonzeros: how many connections (1 .. ``pair.dense_size``).
        sampling: ``"block"``, ``"uniform"`` or ``"channel"``.
        rng: the random generator.
        width: source units of a block (default ``ceil(nonzeros / (targets x kernel))``).

    Returns:
        The :class:`Connections`.
    """
    targets, sources = pair.target.units, pair.source.units
    kernel = tuple(pair.kernel)
    per_source = targets * int(np.prod(kernel, dtype=np.int64))
    if sampling == "channel":
        empty = np.zeros((targets, sources, int(np.prod(kernel, dtype=np.int64))), dtype=bool)
        chosen = whole_kernels(empty, nonzeros, rng)
        return connections_from_mask(chosen.reshape(targets, sources, *kernel))
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


def whole_kernels(taken: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``taken`` plus ``count`` positions in whole kernels on free unit pairs, expander-style.

    The free unit pairs (no position taken yet) are shared out as evenly as possible over
    the target units (random ones get the rounding); each target picks its share of random
    free source units and keeps their whole kernels. The last ``count mod kernel`` positions
    go to one more random free unit pair, or, where none is left, to free positions of
    partly taken kernels.

    Args:
        taken: bool ``(targets, sources, kernel positions)``: positions already used.
        count: positions to add (at most the free ones).
        rng: the random generator.

    Returns:
        The new bool mask (``taken`` with the added positions).
    """
    targets, sources, kernel = taken.shape
    chosen = np.array(taken, dtype=bool, copy=True)
    free_pairs = ~taken.any(axis=2)
    whole, partial = divmod(int(count), kernel)
    whole = min(whole, int(free_pairs.sum()))
    order = rng.permutation(targets)  # random targets get the rounding
    quota = np.zeros(targets, dtype=np.int64)
    quota[order] = apportion(whole, [1.0] * targets, free_pairs.sum(axis=1)[order].tolist())
    keys = np.where(free_pairs, rng.random((targets, sources)), 2.0)
    rank = np.argsort(np.argsort(keys, axis=1, kind="stable"), axis=1, kind="stable")
    picked = rank < quota[:, None]
    chosen[picked] = True
    left = int(count) - int(np.count_nonzero(chosen)) + int(np.count_nonzero(taken))
    if left > 0:
        spare = np.flatnonzero((free_pairs & ~picked).reshape(-1))
        flat = chosen.reshape(targets * sources, kernel)
        if spare.size and left < kernel:
            unit_pair = int(rng.choice(spare))
            flat[unit_pair, rng.choice(kernel, size=left, replace=False)] = True
        else:  # every unit pair has some position: top up partly taken kernels
            free = np.flatnonzero(~flat.reshape(-1))
            flat.reshape(-1)[rng.choice(free, size=left, replace=False)] = True
    return chosen


def fill_positions(
    taken: np.ndarray, count: int, sampling: str, rng: np.random.Generator
) -> np.ndarray:
    """``taken`` plus ``count`` free positions laid out as ``sampling`` says.

    Used after :mod:`~n2nonnx.skip.placement` has fixed some connections of a pair:
    ``uniform`` spreads the rest over the free positions, ``channel`` in whole kernels
    (:func:`whole_kernels`), ``block`` over the free positions of as few random source
    units as hold them.

    Args:
        taken: bool ``(targets, sources, kernel positions)``.
        count: positions to add (at most the free ones).
        sampling: one of ``SAMPLING_MODES``.
        rng: the random generator.

    Returns:
        The new bool mask.
    """
    if count <= 0:
        return np.array(taken, dtype=bool, copy=True)
    if sampling == "channel":
        return whole_kernels(taken, count, rng)
    chosen = np.array(taken, dtype=bool, copy=True)
    if sampling == "uniform":
        free = np.flatnonzero(~chosen.reshape(-1))
        chosen.reshape(-1)[rng.choice(free, size=count, replace=False)] = True
        return chosen
    by_source = np.moveaxis(chosen, 1, 0).reshape(chosen.shape[1], -1)  # (sources, t x k)
    order = rng.permutation(by_source.shape[0])
    room = np.cumsum((~by_source[order]).sum(axis=1))
    width = int(np.searchsorted(room, count)) + 1
    block = np.sort(order[:width])
    cells = np.argwhere(~by_source[block])
    pick = cells[rng.choice(len(cells), size=count, replace=False)]
    by_source[block[pick[:, 0]], pick[:, 1]] = True
    return np.moveaxis(by_source.reshape(chosen.shape[1], chosen.shape[0], -1), 0, 1)
