"""``add_n2nskip``: turn a (pruned) model into an N2NSkip model of the same density.

Its options are validated once, as a :class:`~n2nonnx.skip.options.SkipOptions`; the work is
in the modules beside this one (pairs, budget, sampling, placement, building).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import onnx

from n2nonnx import masks, metadata
from n2nonnx.errors import InvalidArgumentError
from n2nonnx.graph.normalize import infer_shapes
from n2nonnx.model import Model
from n2nonnx.skip.budget import apportion_with_minimum, regrow_masks, trim_masks
from n2nonnx.skip.build import Branch, Built, Style, add_branches
from n2nonnx.skip.candidates import LeftOut, Pair, PairSpec, find_pairs, sequential_layers
from n2nonnx.skip.options import (
    DEFAULT_MIN_PAIR_WEIGHTS,
    DEFAULT_SAMPLING,
    SkipOptions,
    check_numbers,
)
from n2nonnx.skip.sampling import Connections, block_widths, sample_connections

__all__ = ["add_n2nskip", "add_n2nskip_with", "sequential_density"]

logger = logging.getLogger(__name__)


def add_n2nskip(
    model: Model,
    *,
    density: float | None = None,
    skip_share: float = 0.5,
    pairs: PairSpec = "all",
    per_target: int | None = None,
    spread: str = "proportional",
    min_pair_weights: int = DEFAULT_MIN_PAIR_WEIGHTS,
    sampling: str = DEFAULT_SAMPLING,
    placement: str = "random",
    kernel: str = "target",
    pool: str = "max",
    pool_at: str = "source",
    skip_norm: str = "none",
    join: str = "activation",
    merge: str = "target",
    init_scale: float = 1.0,
    seed: int = 0,
) -> Model:
    """Add N2NSkip connections within a fixed non-zero budget; returns a new model.

    Budget: ``total = round(density x dense weights of the sequential layers)``; the skip
    pairs get ``round(skip_share x total)`` of it, the sequential layers keep the rest. If
    the sequential layers hold more than their part, kept weights are removed at random,
    per layer in proportion to its kept count (recorded as ``sequential.removed``). If
    they hold a few fewer (a pruner's per-layer rounding: at most one per layer or 1% of
    the budget), the skips take the difference; many fewer is an error (skips never make
    the sequential part denser). If the pairs cannot hold their share (each pair holds
    at most its dense size), the sequential layers keep the rest, up to what they have.

    ``density=None`` means the model's achieved density (from its masks), so a model
    pruned at 10% becomes 5% sequential + 5% skip with the default share. A dense
    (unmasked) model has no density to keep: pass ``density`` explicitly, and its
    sequential layers are pruned at random to ``(1 - skip_share) x density``.

    Skip weights are Kaiming-normal over the pair's dense fan-in (``source units x
    kernel``, as the authors' code initialises the whole ``S`` and then masks it), times
    ``init_scale``: with a fraction of the positions kept, the branch starts with a small
    contribution.

    Args:
        model: a loaded model, pruned (masks by :mod:`n2nonnx.masks`) or dense.
        density: non-zero fraction of the result, sequential and skip together, relative
            to the dense sequential weights; None: the model's current density.
        skip_share: the part of the budget for skip weights, in [0, 1).
        pairs: ``"all"`` candidate pairs, ``"blocks"`` (each convolution block's input to
            the next block's first conv, the authors' VGG code; refused for a network
            without two conv blocks), an int (the largest ``k``), or a list of
            ``(source, target)`` names (see :func:`find_pairs`).
        per_target: at most this many (nearest) sources per target.
        spread: ``"proportional"`` (skip budget split by the pairs' dense sizes) or ``"equal"``.
        min_pair_weights: the fewest skip weights a pair may hold. A pair below it (each
            pair costs a Gather, a Conv / MatMul and an Add at inference whatever it holds)
            is dropped, the smallest first, and the skip budget is split again over the
            pairs left, so the total is unchanged. When the whole skip budget is below
            the minimum, one pair (the largest share) holds it all. A pair whose dense size
            is below the minimum stays where the other pairs could not hold the budget
            without it. With ``placement="connectivity"`` the dropped pairs are left out
            before the placement, whose repairs then split the budget their own way.
            Dropped pairs are in the metadata's ``left_out`` with the reason; 1 keeps
            every pair.
        sampling: ``"block"`` (default; connections fill a random subset of source
            units, so a branch costs about its non-zeros in a dense runtime),
            ``"uniform"`` (the paper: uniformly random over the dense skip tensor) or
            ``"channel"`` (the authors' code: each target unit keeps whole kernels of
            ``int(source units x density)`` random source units).
        placement: ``"random"`` (the paper) or ``"connectivity"``: first the connections
            that give units of the pruned graph their missing input / output paths and
            join cut-off components, then the rest as ``sampling`` says
            (:mod:`~n2nonnx.skip.placement`); the same total number of non-zeros.
        kernel: ``"target"`` (the target's kernel size) or ``"1x1"`` for conv pairs.
        pool: ``"max"`` (the authors' code) or ``"avg"`` spatial alignment.
        pool_at: ``"source"`` (default: pool the source to the target's size, then the
            skip conv) or ``"output"`` (the authors' code: the skip conv at the block
            input's size, the rest of the pooling after the activation).
        skip_norm: ``"none"`` or ``"batchnorm"``: the skip layer's own BatchNorm between
            its conv and its activation (the authors' code; trainable scale and bias,
            running statistics updated in training; it rescales the branch, so
            ``init_scale`` then only sets the initial direction).
        join: ``"activation"`` (default: add into the input of the target's nonlinearity,
            after its BatchNorm) or ``"preact"`` (into the raw layer output, before it).
        merge: ``"target"`` (default: the pairs into one target form one skip layer over
            their concatenated sources, one Conv / MatMul per target, ``a = g(z +
            g(S [a_l1; a_l2; ...]))``) or ``"pair"`` (one skip layer per pair, summed:
            eq. 2 per pair). Identical when a target has one source.
        init_scale: multiplier of the Kaiming-normal initial skip weights.
        seed: seed of every random choice (same seed, same file byte for byte).

    Returns:
        The N2NSkip model; its metadata gets an ``n2nskip`` stage record with per-pair
        counts and the pairs left out, with reasons.

    Raises:
        InvalidArgumentError: a parameter out of range, a dense model without
            ``density``, or a budget the sequential layers cannot meet.
    """
    settings = SkipOptions(
        skip_share=skip_share,
        pairs=pairs,
        per_target=per_target,
        spread=spread,
        min_pair_weights=min_pair_weights,
        sampling=sampling,
        placement=placement,
        merge=merge,
        join=join,
        kernel=kernel,
        pool=pool,
        pool_at=pool_at,
        skip_norm=skip_norm,
        init_scale=init_scale,
        seed=seed,
    )
    return add_n2nskip_with(model, settings, density=density)


def add_n2nskip_with(model: Model, settings: SkipOptions, *, density: float | None = None) -> Model:
    """:func:`add_n2nskip` with its options already made (and validated) as a :class:`SkipOptions`.

    Args:
        model: a loaded model, pruned or dense.
        settings: the options.
        density: non-zero fraction of the result; None: the model's current density.

    Returns:
        The N2NSkip model (see :func:`add_n2nskip`).
    """
    check_numbers(density, settings.skip_share, settings.init_scale)
    skip_share, pairs, per_target = settings.skip_share, settings.pairs, settings.per_target
    spread, sampling, placement = settings.spread, settings.sampling, settings.placement
    kernel, pool, pool_at = settings.kernel, settings.pool, settings.pool_at
    skip_norm, join, merge = settings.skip_norm, settings.join, settings.merge
    init_scale, seed = settings.init_scale, settings.seed
    minimum = settings.min_pair_weights
    layers = sequential_layers(model)
    if len(layers) != len(model.layers):
        raise InvalidArgumentError(
            "the model already has N2NSkip layers; add skips to the pruned model instead"
        )
    dense_total = sum({layer.weight: layer.parameters for layer in layers}.values())  # shared once
    existing = masks.mask_arrays(model)
    kept = {
        layer.weight: existing[layer.weight]
        if layer.weight in existing
        else np.ones(layer.weight_shape, np.float32)
        for layer in layers
    }
    kept_total = int(sum(np.count_nonzero(m) for m in kept.values()))
    if density is None:
        if not any(layer.weight in existing for layer in layers):
            raise InvalidArgumentError(
                "the model is dense: pass density= (the non-zero fraction of sequential + skip "
                "weights, e.g. 0.1) or prune it first"
            )
        density = kept_total / dense_total
    budget = int(round(density * dense_total))
    candidates, left_out = _joinable_pairs(model, pairs, per_target, kernel, pool)
    skip_wanted = int(round(skip_share * budget)) if candidates else 0
    deficit = budget - skip_wanted - kept_total
    if deficit > 0:
        # A pruner's per-layer rounding can leave a few weights fewer than the sequential
        # part; the skips take those few. Many fewer is a caller mistake.
        if not candidates:
            # Nothing to spend the skip share on: the whole budget stays sequential, and the
            # sequential layers keep what they have (prune at the full density first:
            # sequential_density() tells a caller that before pruning).
            warnings.warn(
                f"N2NSkip: no pair to spend the skip share on; the sequential layers keep their "
                f"{kept_total} weights ({budget} budgeted): prune at density={density:g} without "
                "N2NSkip for the full budget",
                stacklevel=2,
            )
            deficit = 0
        elif deficit > max(len(layers), budget // 100):
            raise InvalidArgumentError(
                f"the sequential layers keep {kept_total} weights, fewer than the {budget - skip_wanted} "
                f"that density={density:g} with skip_share={skip_share:g} leaves them; lower density "
                "or prune at a higher density first"
            )
        skip_wanted += deficit
    shares = [p.dense_size if spread == "proportional" else 1 for p in candidates]
    per_pair, dropped = apportion_with_minimum(
        skip_wanted, shares, [p.dense_size for p in candidates], minimum
    )
    skip_budget = sum(per_pair)
    if dropped:
        kept_pairs = [i for i, count in enumerate(per_pair) if count > 0]
        for position in dropped:
            pair = candidates[position]
            reason = f"below min_pair_weights={minimum}: its weights went to the kept pairs"
            left_out.append(LeftOut(pair.source.name, pair.target.name, reason))
            logger.debug(
                "N2NSkip: %s -> %s dropped (%s)", pair.source.name, pair.target.name, reason
            )
        if len(kept_pairs) == 1 and per_pair[kept_pairs[0]] < minimum:
            logger.info(
                "N2NSkip: the skip budget (%d weights) is below min_pair_weights=%d; one pair "
                "holds it all",
                skip_budget,
                minimum,
            )
        candidates = [candidates[i] for i in kept_pairs]
        shares = [shares[i] for i in kept_pairs]
        per_pair = [per_pair[i] for i in kept_pairs]
    sequential_target = min(budget - skip_budget, kept_total)
    rng = np.random.default_rng(seed)
    new_masks, removed = trim_masks(kept, kept_total - sequential_target, rng)
    regrown: dict[str, int] = {}
    short = budget - skip_budget - sequential_target
    if candidates and short > 0:
        # The pairs are full (each holds at most its dense size): the rest of the skip share
        # goes back to the sequential layers, so the total is the budget.
        new_masks, regrown = regrow_masks(kept, short, rng)
        sequential_target += sum(regrown.values())
        warnings.warn(
            f"N2NSkip: the skip pairs hold at most {skip_budget} weights of the {skip_wanted} in their "
            f"share; {sum(regrown.values())} go back to the sequential layers (pruned positions "
            "kept again at random)",
            stacklevel=2,
        )
    repairs, placed = None, None
    if placement == "connectivity" and candidates:
        from n2nonnx.skip.placement import place_connections

        sequential_model = masks.apply_masks(model, new_masks) if new_masks else model
        placed, repairs = place_connections(
            sequential_model, candidates, shares, skip_budget, sampling, rng
        )
    options = {"sampling": sampling, "merge": merge, "init_scale": init_scale}
    branches = _branches(candidates, per_pair, placed, options, rng, left_out)
    for branch in branches:
        pair = branch.pair
        logger.debug(
            "  %s -> %s  k=%d  %d/%d weights  %s",
            pair.source.name,
            pair.target.name,
            pair.k,
            branch.connections.nonzeros,
            pair.dense_size,
            pair.alignment,
        )
    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    style = Style(join=join, merge=merge, norm=skip_norm, pool_at=pool_at)
    built, skip_masks = add_branches(proto, model.index, branches, style)
    new_masks.update(skip_masks)
    result = masks.apply_masks(model.with_proto(proto), new_masks)
    proto = infer_shapes(result.proto)
    metadata.append_stage(
        proto,
        "n2nskip",
        method="n2nskip",
        density=float(density),
        skip_share=float(skip_share),
        seed=int(seed),
        sampling=sampling,
        placement=placement,
        spread=spread,
        kernel=kernel,
        pool=pool,
        pool_at=pool_at,
        skip_norm=skip_norm,
        join=join,
        merge=merge,
        init="kaiming-normal(dense fan-in)",
        init_scale=float(init_scale),
        budget=budget,
        dense_sequential=dense_total,
        sequential={
            "before": kept_total,
            "after": sequential_target,
            "removed": removed,
            "regrown": regrown,
        },
        skip_nonzeros=skip_budget,
        min_pair_weights=int(minimum),
        below_minimum=len(dropped),
        repairs=None if repairs is None else repairs.to_dict(),
        pairs=[_record(b, built[b.pair.base_name]) for b in branches],
        left_out=[entry.to_dict() for entry in left_out],
    )
    return model.with_proto(proto)


def sequential_density(model: Model, density: float, skip_share: float, **pair_options) -> float:
    """The density to prune the sequential layers at before :func:`add_n2nskip`.

    ``density x (1 - skip_share)`` when the model has a joinable pair; the whole ``density``
    (with a warning) when it has none (transformer encoders whose layers all read the
    previous one), so that the model still ends at the budget.

    Args:
        model: the dense model.
        density: the total density, sequential and skip weights together.
        skip_share: the part of the budget for skip weights.
        pair_options: ``pairs``, ``per_target``, ``kernel``, ``pool`` as for :func:`find_pairs`.

    Returns:
        The sequential density.
    """
    candidates, _ = find_pairs(model, **pair_options)
    if candidates or not skip_share:
        return density * (1 - skip_share)
    warnings.warn(
        "N2NSkip: the model has no layer pair that can be joined; the whole budget stays "
        "with the sequential layers",
        stacklevel=2,
    )
    return density


def _joinable_pairs(
    model: Model, pairs: PairSpec, per_target: int | None, kernel: str, pool: str
) -> tuple[list[Pair], list[LeftOut]]:
    """The candidate pairs; an explicitly named pair that cannot be joined is an error."""
    candidates, left_out = find_pairs(model, pairs, per_target=per_target, kernel=kernel, pool=pool)
    if not isinstance(pairs, (str, int, np.integer)):  # explicit pairs: each must be joinable
        refused = [
            entry for entry in left_out if not entry.reason.startswith("over the per-target limit")
        ]
        if refused:
            raise InvalidArgumentError(
                f"the skip pair {refused[0].source},{refused[0].target} cannot be joined: {refused[0].reason}; "
                "choose a source at least two layers before its target (n2nonnx inspect lists the layers)"
            )
    if not candidates:
        warnings.warn(
            "N2NSkip: the model has no non-consecutive layer pair that can be joined; no skip "
            "connection added"
            + (f" ({len(left_out)} pairs left out, see the metadata)" if left_out else ""),
            stacklevel=3,
        )
    return candidates, left_out


def _branches(
    candidates: list[Pair],
    per_pair: list[int],
    placed: list[Connections | None] | None,
    options: dict,
    rng: np.random.Generator,
    left_out: list[LeftOut],
) -> list[Branch]:
    """The pairs' branches: connections (sampled here unless ``placed``) and initial weights.

    Args:
        candidates: the pairs.
        per_pair: their non-zeros under random placement.
        placed: connections from connectivity placement, or None to sample at random.
        options: ``sampling``, ``merge`` and ``init_scale``.
        rng: the random generator (sampling and weights drawn pair by pair).
        left_out: pairs without connections are appended here.

    Returns:
        One branch per pair that has connections.
    """
    widths = _widths(candidates, per_pair, options["sampling"], options["merge"])
    branches: list[Branch] = []
    for position, pair in enumerate(candidates):
        if placed is not None:
            connections = placed[position]
        elif per_pair[position] > 0:
            connections = sample_connections(
                pair, per_pair[position], options["sampling"], rng, widths[position]
            )
        else:
            connections = None
        if connections is None:
            reason = "no weights left for it in the skip budget"
            left_out.append(LeftOut(pair.source.name, pair.target.name, reason))
            continue
        weight = _initial_weight(pair, connections, options["init_scale"], rng)
        branches.append(Branch(pair, connections, weight))
    return branches


def _widths(pairs: list[Pair], counts: list[int], sampling: str, merge: str) -> list[int | None]:
    """Block widths per pair (None for uniform sampling), aligned per skip layer."""
    if sampling != "block":
        return [None] * len(pairs)
    widths: list[int | None] = [None] * len(pairs)
    groups: dict[str, list[int]] = {}
    for position, (pair, count) in enumerate(zip(pairs, counts, strict=True)):
        if count > 0:
            key = pair.target.name if merge == "target" else pair.base_name
            groups.setdefault(key, []).append(position)
    for members in groups.values():
        found = block_widths([pairs[i] for i in members], [counts[i] for i in members])
        for position, width in zip(members, found, strict=True):
            widths[position] = width
    return widths


def _initial_weight(
    pair: Pair, connections: Connections, init_scale: float, rng: np.random.Generator
) -> np.ndarray:
    """Kaiming-normal over the pair's dense fan-in, times ``init_scale``, masked."""
    fan_in = pair.source.units * int(np.prod(pair.kernel, dtype=np.int64))
    std = init_scale * np.sqrt(2.0 / fan_in)
    return (rng.standard_normal(connections.mask.shape) * std).astype(np.float32) * connections.mask


def _record(branch: Branch, built: Built) -> dict:
    pair: Pair = branch.pair
    return {
        "source": pair.source.name,
        "target": pair.target.name,
        "k": pair.k,
        "nonzeros": branch.connections.nonzeros,
        "dense_size": pair.dense_size,
        "alignment": pair.alignment,
        "kernel": list(pair.kernel),
        "source_units": len(branch.connections.used_sources),
        "weight": built.weight,
        "weight_inputs": list(built.inputs),
        "activation": built.activation,
    }
