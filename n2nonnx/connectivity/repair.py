"""Connectivity repair: move kept weights that lie on no input-to-output path onto live paths.

A kept weight is *dead* when none of its source units can be reached from the inputs or
its target unit cannot reach an output, in the binary unit graph of
:func:`~n2nonnx.connectivity.build_unit_graph` (residual adds, concat, reshapes and N2NSkip
branches followed; a conv weight is one kernel entry of a channel pair). Dead weights are
wasted budget. :func:`repair_dead_weights` moves them, keeping the exact number of
non-zeros, until none is left. Each round (:mod:`~n2nonnx.connectivity.repair_steps`):

1. **Revive**: a unit reachable from the inputs that reaches no output (or the reverse)
   and carries dead weights gets one new weight to (from) a unit that does, and its dead
   weights become live. Units go by the dead weights they save, while the dead weights
   left can pay for the new ones.
2. **Move**: the weights still dead are removed, and as many are regrown where the
   source is reachable and the target reaches an output: first in the layers that lost
   weights, then in proportion to the layers' original counts. Within a layer (and for a
   revived unit) candidates go by the criterion's scores when given (its next-best
   choices), else in a seeded random order.

Fallbacks (:mod:`~n2nonnx.connectivity.repair_paths`): when nothing can revive and the
live part has no room (a layer pruned to nothing), the cheapest chain of new weights
through a dead unit reconnects it (**bridge**); when revival saved more weights than the
dead ones could pay for, kept weights whose removal cuts no path go (**trim**).

Only masked weights are moved and counted (unmasked layers, biases and norms stay as they
are). Removing dead weights never changes which units are live and a weight grown between
live endpoints stays live, so a round or two reach the fixed point; the rounds are
bounded (``max_rounds``). When the network has no room for the dead weights, the rest
stay in place, the count is still exact, a warning is logged and the record says
``converged: false``.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping

import numpy as np

from n2nonnx import metadata
from n2nonnx.connectivity.repair_record import RepairRecord
from n2nonnx.connectivity.repair_steps import RepairState
from n2nonnx.errors import InvalidArgumentError
from n2nonnx.masks import apply_masks, mask_arrays
from n2nonnx.model import Model

log = logging.getLogger(__name__)

DEFAULT_ROUNDS = 10

__all__ = ["DEFAULT_ROUNDS", "RepairRecord", "dead_weights", "repair_dead_weights", "repair_model"]


def repair_dead_weights(
    model: Model,
    *,
    scores: Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
    weights: Collection[str] | None = None,
    allowed: Mapping[str, np.ndarray] | None = None,
    max_rounds: int = DEFAULT_ROUNDS,
) -> Model:
    """Move the kept weights that lie on no input-to-output path onto live paths.

    Args:
        model: a pruned (masked) model, N2NSkip layers included.
        scores: weight name -> scores of the weight's shape (higher regrows first), e.g.
            the pruning criterion's; weights without scores regrow in a random order.
        seed: seed of every random choice (same seed, same file byte for byte).
        weights: the masked weights that may change (default: every masked weight).
        allowed: weight name -> bool array: the only positions that may be regrown.
        max_rounds: the most rounds of revive / move.

    Returns:
        The repaired model, with a ``repair`` stage record (:class:`RepairRecord`).

    Raises:
        InvalidArgumentError: a model without masks, a name in ``weights`` that is not
            a masked weight, scores of the wrong shape or with NaN, or ``max_rounds`` < 1.
    """
    repaired, record = repair_model(
        model, scores=scores, seed=seed, weights=weights, allowed=allowed, max_rounds=max_rounds
    )
    metadata.append_stage(repaired.proto, "repair", **record.to_dict())  # our own fresh proto
    return repaired


def repair_model(
    model: Model,
    *,
    scores: Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
    weights: Collection[str] | None = None,
    allowed: Mapping[str, np.ndarray] | None = None,
    max_rounds: int = DEFAULT_ROUNDS,
) -> tuple[Model, RepairRecord]:
    """:func:`repair_dead_weights` without the provenance record: ``(model, record)``.

    For a stage that records the repair itself (``prune(..., repair=True)``). Masked
    positions whose stored value is non-zero (a mask applied with ``zero_weights=False``)
    regrow with that value; the others draw a magnitude from the layer's kept weights, with
    a random sign. Every masked weight is written with its pruned entries zeroed.

    Args and Raises: as :func:`repair_dead_weights`.

    Returns:
        ``(repaired model, record)``.
    """
    if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 1:
        raise InvalidArgumentError(f"max_rounds must be an integer >= 1, got {max_rounds!r}")
    masked = mask_arrays(model)
    if isinstance(weights, str):
        weights = [weights]
    unknown = sorted(set(weights or ()) - set(masked))
    if unknown:
        raise InvalidArgumentError(
            f"weights {', '.join(map(repr, unknown))} are not masked weights of the model; "
            f"choose from {', '.join(masked) or 'none (prune the model first)'}"
        )
    order = list(dict.fromkeys(layer.weight for layer in model.layers))
    movable = [w for w in order if w in masked and (weights is None or w in weights)]
    if not movable:
        raise InvalidArgumentError(
            "the model has no masked weights to repair; prune it first (n2nonnx prune), then repair"
        )
    rng = np.random.default_rng(seed)

    network = RepairState(model, movable, _keys(model, movable, scores, rng), allowed or {})
    before = {w: network.kept[w].copy() for w in movable}
    record = network.repair(max_rounds, int(seed))
    record.layers = [
        {
            "layer": model.layer(w).name,
            "weight": w,
            "before": network.original[w],
            "kept": int(network.kept[w].sum()),
            "removed": network.removed[w],
            "added": network.added[w],
            "by": "scores" if scores is not None and w in scores else "random",
        }
        for w in movable
    ]
    values = {
        w: _regrown_values(model, w, before[w], network.kept[w], rng)
        for w in movable
        if (network.kept[w] & ~before[w]).any()
    }
    source = model.with_initializers(values) if values else model
    new_masks = {w: network.kept[w].astype(np.float32) for w in movable}
    repaired = apply_masks(source, new_masks)
    if record.rounds:
        log.debug(record.summary())
    return repaired, record


def dead_weights(model: Model) -> dict[str, int]:
    """Kept weights on no input-to-output path, per masked weight (what repair moves).

    Args:
        model: a pruned (masked) model.

    Returns:
        Masked weight name -> number of its kept entries that lie on no path.
    """
    from n2nonnx.connectivity.entries import EntryGraph

    graph = EntryGraph(model)
    forward, backward = graph.reach()
    return {
        weight: int((graph.kept[weight] & ~graph.live(weight, forward, backward)).sum())
        for weight in mask_arrays(model)
        if weight in graph.kept
    }


def _keys(
    model: Model,
    movable: list[str],
    scores: Mapping[str, np.ndarray] | None,
    rng: np.random.Generator,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Weight -> (score, random tie-break), flat: positions regrow in descending order."""
    keys = {}
    for weight in movable:
        shape = model.initializer(weight).shape
        tiebreak = rng.random(int(np.prod(shape)))
        if scores is not None and weight in scores:
            score = np.asarray(scores[weight], dtype=np.float64)
            if score.shape != shape:
                raise InvalidArgumentError(
                    f"the scores of {weight!r} have shape {score.shape}, the weight {shape}; give "
                    "one score per weight entry"
                )
            if np.isnan(score).any():
                raise InvalidArgumentError(
                    f"the scores of {weight!r} contain NaN; repair ranks candidates by score"
                )
            keys[weight] = (score.reshape(-1), tiebreak)
        else:
            keys[weight] = (np.zeros(tiebreak.size), tiebreak)
    return keys


def _regrown_values(
    model: Model, weight: str, before: np.ndarray, after: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """The weight with a non-zero value at every newly kept position that holds 0."""
    value = np.array(model.initializer(weight), copy=True)
    empty = after & ~before & (value == 0)
    if not empty.any():
        return value
    magnitudes = np.abs(value[before & (value != 0)]).astype(np.float64)
    count = int(empty.sum())
    if magnitudes.size:
        drawn = rng.choice(magnitudes, count) * rng.choice((-1.0, 1.0), count)
    else:  # the layer kept nothing: Kaiming-normal over its fan-in
        fan_in = max(int(model.layer(weight).fan_in), 1)
        drawn = rng.standard_normal(count) * np.sqrt(2.0 / fan_in)
        drawn[drawn == 0] = np.sqrt(2.0 / fan_in)
    value[empty] = drawn.astype(value.dtype)
    return value
