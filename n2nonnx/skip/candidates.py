"""N2NSkip candidate pairs: which (source activation, target pre-activation) pairs can be joined.

A *source* is the activation after a layer (``Layer.output``) or a graph input; a *target*
is the pre-activation (``Layer.preact``) of a later layer. A pair qualifies when the target
lies downstream of the source (so the new branch cannot close a cycle), the target does
not already consume the source directly, and it is at least two layers deeper
(``k = target.depth - source.depth >= 2``; a graph input has depth 0). Shapes are then
aligned (:func:`align`): FC -> FC as is, conv -> conv by pooling at an integer ratio,
conv -> FC through global average pooling. A pair that cannot be aligned is left out
with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from n2nonnx.errors import InvalidArgumentError
from n2nonnx.graph.layers import Layer
from n2nonnx.graph.trace import input_view
from n2nonnx.model import Model
from n2nonnx.skip.blocks import block_pair_names
from n2nonnx.skip.options import KERNELS, POOLS

PairSpec = str | int | Sequence[tuple[str, str]]


@dataclass(frozen=True)
class Source:
    """Where a skip branch reads from.

    Attributes:
        name: the layer name, or ``input:<graph input>``.
        label: the name used in skip node names (the layer name or the input name).
        tensor: the activation tensor read by the branch.
        units: neurons / channels along ``feature_axis``.
        feature_axis: the tensor axis of the units (1 for the layouts supported).
        spatial: sizes besides batch and units (``()`` for FC).
        depth: layers on the longest path from a graph input (0 for an input).
        rank: the tensor's rank (None if unknown).
    """

    name: str
    label: str
    tensor: str
    units: int
    feature_axis: int
    spatial: tuple[int, ...]
    depth: int
    rank: int | None

    @property
    def is_conv(self) -> bool:
        """True for a source with spatial dims (rank 3 or more: a convolution's output)."""
        return self.rank is not None and self.rank >= 3


@dataclass(frozen=True)
class Pair:
    """One aligned N2NSkip pair.

    Attributes:
        source: the source.
        target: the target layer.
        k: depth difference (``>= 2``).
        kind: ``fc``, ``conv`` or ``conv->fc``.
        pool: pooling window (= stride) per spatial dim for conv -> conv, ``()`` for none.
        kernel: skip kernel size (``()`` for FC).
        alignment: human-readable alignment (``identity``, ``max-pool 2x2``, ``global-average-pool``).
    """

    source: Source
    target: Layer
    k: int
    kind: str
    pool: tuple[int, ...]
    kernel: tuple[int, ...]
    alignment: str

    @property
    def dense_size(self) -> int:
        """Weights of the dense skip tensor (target units x source units x kernel)."""
        return int(
            self.target.units * self.source.units * int(np.prod(self.kernel, dtype=np.int64))
        )

    @property
    def base_name(self) -> str:
        """Prefix of every node / initializer of this pair: ``n2nskip/<source>-><target>``."""
        return f"n2nskip/{self.source.label}->{self.target.name}"


@dataclass(frozen=True)
class LeftOut:
    """A pair that was considered and not used, with the reason."""

    source: str
    target: str
    reason: str

    def to_dict(self) -> dict:
        """The left-out pair as JSON-ready data."""
        return {"source": self.source, "target": self.target, "reason": self.reason}


def sequential_layers(model: Model) -> list[Layer]:
    """The model's layers that are not N2NSkip layers."""
    return [layer for layer in model.layers if not layer.is_skip]


def sources_of(model: Model) -> list[Source]:
    """Every possible source: graph inputs that feed a layer, then every sequential layer."""
    layers = sequential_layers(model)
    index = model.index
    found: list[Source] = []
    fed_inputs = {
        e.source for layer in layers for e in layer.fed_by if e.source.startswith("input:")
    }
    for name in index.graph_inputs:
        key = f"input:{name}"
        if key not in fed_inputs:
            continue
        # The tensor the first layer reads (after an exporter's NHWC -> NCHW Transpose).
        view = input_view(index, name, layers)
        tensor, axis = (view[0], view[1]) if view is not None else (name, 1)
        shape = index.shape(tensor)
        if shape is None or len(shape) < 2:
            continue
        sizes = [d for d in shape[1:] if isinstance(d, int)]
        units = shape[axis]
        if len(sizes) != len(shape) - 1 or not isinstance(units, int):
            continue
        spatial = tuple(size for position, size in enumerate(sizes, 1) if position != axis)
        found.append(Source(key, name, tensor, units, axis, spatial, 0, len(shape)))
    for layer in layers:
        found.append(
            Source(
                layer.name,
                layer.name,
                layer.output,
                layer.units,
                layer.out_feature_axis,
                layer.spatial_out,
                layer.depth,
                model.index.rank(layer.output),
            )
        )
    return found


def _downstream(layers: list[Layer]) -> dict[str, set[str]]:
    """Layer / input name -> names of every layer reachable from it along layer edges."""
    reach: dict[str, set[str]] = {}
    for layer in reversed(layers):  # reverse topological order
        below: set[str] = set()
        for edge in layer.feeds:
            if edge.target in reach:
                below |= {edge.target} | reach[edge.target]
        reach[layer.name] = below
    for layer in layers:
        for edge in layer.fed_by:
            if edge.source.startswith("input:"):
                reach.setdefault(edge.source, set())
                reach[edge.source] |= {layer.name} | reach[layer.name]
    return reach


def align(
    source: Source,
    target: Layer,
    *,
    kernel: str = "target",
    pool: str = "max",
    batch: tuple | None = None,
) -> tuple[Pair | None, str]:
    """Align ``source`` with ``target``.

    Args:
        source: the source.
        target: the target layer.
        kernel: ``"target"`` (the target's kernel size, same padding) or ``"1x1"``.
        pool: ``"max"`` (the authors' code) or ``"avg"`` for conv -> conv downsampling.
        batch: dimension 0 of the source and target tensors, when known; they must agree
            (a layer applied to reshaped tokens has a different leading dimension).

    Returns:
        ``(pair, "")``, or ``(None, reason)`` when the shapes cannot be aligned. ``k`` is
        filled in by the caller.
    """
    if source.feature_axis != 1 or source.rank is None:
        return None, "the source's units are not on axis 1 (unsupported layout)"
    target_conv = target.op == "Conv" and len(target.spatial_out) >= 1
    target_fc = (
        target.op in ("Gemm", "MatMul")
        and target.spatial_out == ()
        and target.out_feature_axis == 1
    )
    if not (target_conv or target_fc):
        return (
            None,
            f"target op {target.op} with output layout {target.spatial_out} is not supported",
        )
    if target.out_feature_axis != 1:
        return None, "the target's units are not on axis 1 (unsupported layout)"
    if batch is not None and batch[0] != batch[1]:
        return None, f"the batch dimensions differ ({batch[0]!r} vs {batch[1]!r})"
    if target_fc:
        if source.rank == 2:
            return Pair(source, target, 0, "fc", (), (), "identity"), ""
        if source.is_conv:
            return Pair(source, target, 0, "conv->fc", (), (), "global-average-pool"), ""
        return None, f"source of rank {source.rank} cannot feed a fully connected target"
    if not source.is_conv:
        return None, "a fully connected source cannot feed a convolution target"
    if len(source.spatial) != len(target.spatial_out):
        return None, f"spatial ranks differ: {source.spatial} -> {target.spatial_out}"
    ratios = []
    for have, want in zip(source.spatial, target.spatial_out, strict=True):
        if want <= 0 or have % want != 0:
            return None, (
                f"spatial sizes {source.spatial} -> {target.spatial_out} are not an integer ratio"
            )
        ratios.append(have // want)
    target_kernel = tuple(int(d) for d in target.kernel_size)
    size: tuple[int, ...] = target_kernel
    note = ""
    if kernel == "1x1" or any(d % 2 == 0 for d in target_kernel):
        if kernel != "1x1":
            note = " (1x1: even target kernel)"
        size = (1,) * len(target_kernel)
    window = tuple(ratios) if any(r > 1 for r in ratios) else ()
    alignment = "identity" if not window else f"{pool}-pool {'x'.join(map(str, window))}"
    return Pair(source, target, 0, "conv", window, size, alignment + note), ""


def find_pairs(
    model: Model,
    pairs: PairSpec = "all",
    *,
    per_target: int | None = None,
    kernel: str = "target",
    pool: str = "max",
) -> tuple[list[Pair], list[LeftOut]]:
    """The aligned candidate pairs of ``model`` chosen by ``pairs`` / ``per_target``.

    Args:
        model: the model (its N2NSkip layers, if any, are ignored).
        pairs: ``"all"``; ``"blocks"`` (each convolution block's input to the next
            block's first conv, see :mod:`~n2nonnx.skip.blocks`); an int, the largest ``k``
            allowed; or an explicit list of ``(source, target)`` names (layer names, weight
            names, graph input names or ``input:<name>``).
        per_target: keep at most this many sources per target, the nearest ones
            (smallest ``k``, then the earlier source).
        kernel: see :func:`align`.
        pool: see :func:`align`.

    Returns:
        ``(pairs, left_out)``: pairs ordered by target, then source; pairs that qualified
        structurally but could not be aligned (or were asked for explicitly and do not
        qualify), with reasons.

    Raises:
        InvalidArgumentError: a bad ``pairs`` / ``per_target`` value or an unknown name.
    """
    layers = sequential_layers(model)
    sources = sources_of(model)
    by_name = {s.name: s for s in sources}
    wanted, max_k = _parse_pair_spec(model, layers, by_name, pairs)
    _check_options(per_target, kernel, pool)
    candidates = wanted if wanted is not None else [(s, t) for t in layers for s in sources]
    chosen, left_out = _align_candidates(
        model,
        candidates,
        _downstream(layers),
        explicit=wanted is not None,
        max_k=max_k,
        kernel=kernel,
        pool=pool,
    )
    if per_target is not None:
        chosen, over = _limit_per_target(layers, chosen, per_target)
        left_out += over
    return _ordered_unique(chosen, layers, sources), left_out


_PAIRS_HINT = "pairs must be 'all', 'blocks', a maximum k, or a list of (source, target) name pairs"


def _parse_pair_spec(
    model: Model, layers: list[Layer], by_name: dict[str, Source], pairs: PairSpec
) -> tuple[list[tuple[Source, Layer]] | None, int | None]:
    """Read ``pairs`` of :func:`find_pairs`.

    Args:
        model: the model.
        layers: its sequential layers.
        by_name: every source by name.
        pairs: ``"all"``, ``"blocks"``, a maximum ``k``, or ``(source, target)`` names.

    Returns:
        ``(wanted, max_k)``: the explicitly asked pairs (None for ``"all"`` and a k) and
        the largest ``k`` allowed (None for no limit).

    Raises:
        InvalidArgumentError: a bad value or an unknown name.
    """
    if isinstance(pairs, str):
        if pairs == "blocks":
            wanted = [
                (by_name[source], _find_target(layers, target))
                for source, target in block_pair_names(layers)
                if source in by_name
            ]
            return wanted, None
        if pairs != "all":
            raise InvalidArgumentError(
                f"pairs={pairs!r}: use 'all', 'blocks', a maximum k (int >= 2) or a list of "
                "(source, target)"
            )
        return None, None
    if isinstance(pairs, bool):
        raise InvalidArgumentError(_PAIRS_HINT)
    if isinstance(pairs, (int, np.integer)):
        if pairs < 2:
            raise InvalidArgumentError(
                f"pairs={pairs}: the maximum k must be at least 2 (k = 1 is a sequential layer)"
            )
        return None, int(pairs)
    try:
        names = [(str(s), str(t)) for s, t in pairs]
    except (TypeError, ValueError):
        raise InvalidArgumentError(_PAIRS_HINT) from None
    return [(_find_source(model, by_name, s), _find_target(layers, t)) for s, t in names], None


def _check_options(per_target: int | None, kernel: str, pool: str) -> None:
    """Refuse bad ``per_target`` / ``kernel`` / ``pool`` values of :func:`find_pairs`.

    Args:
        per_target: a positive integer or None.
        kernel: ``"target"`` or ``"1x1"``.
        pool: ``"max"`` or ``"avg"``.

    Raises:
        InvalidArgumentError: a value outside those.
    """
    if per_target is not None and (not isinstance(per_target, (int, np.integer)) or per_target < 1):
        raise InvalidArgumentError(
            f"per_target={per_target!r}: give a positive integer (or None for no limit)"
        )
    if kernel not in KERNELS:
        raise InvalidArgumentError(f"kernel={kernel!r}: choose 'target' or '1x1'")
    if pool not in POOLS:
        raise InvalidArgumentError(f"pool={pool!r}: choose 'max' or 'avg'")


def _align_candidates(
    model: Model,
    candidates: list[tuple[Source, Layer]],
    reach: dict[str, set[str]],
    *,
    explicit: bool,
    max_k: int | None,
    kernel: str,
    pool: str,
) -> tuple[list[Pair], list[LeftOut]]:
    """The candidates that qualify and align, and those left out with a reason.

    Args:
        model: the model.
        candidates: ``(source, target)`` pairs to consider.
        reach: names downstream of each layer / input (see :func:`_downstream`).
        explicit: the candidates were asked for by name, so structural misfits are
            reported rather than silently skipped.
        max_k: the largest depth difference allowed, or None.
        kernel: see :func:`align`.
        pool: see :func:`align`.

    Returns:
        ``(chosen, left_out)``, in candidate order.
    """
    chosen: list[Pair] = []
    left_out: list[LeftOut] = []
    for source, target in candidates:
        reason = _structural_reason(source, target, reach)
        k = target.depth - source.depth
        if reason is not None:
            if explicit:
                left_out.append(LeftOut(source.name, target.name, reason))
            continue
        if max_k is not None and k > max_k:
            continue
        batch = (_leading(model, source.tensor), _leading(model, target.preact))
        pair, why = align(source, target, kernel=kernel, pool=pool, batch=batch)
        if pair is None:
            left_out.append(LeftOut(source.name, target.name, why))
            continue
        chosen.append(_with_k(pair, k))
    return chosen, left_out


def _limit_per_target(
    layers: list[Layer], chosen: list[Pair], per_target: int
) -> tuple[list[Pair], list[LeftOut]]:
    """Keep the ``per_target`` nearest sources of each target (smallest k, earlier source).

    Args:
        layers: the sequential layers, in order.
        chosen: the aligned pairs.
        per_target: sources kept per target.

    Returns:
        ``(kept, left_out)``: the kept pairs grouped by target, and the dropped ones.
    """
    kept: list[Pair] = []
    left_out: list[LeftOut] = []
    for target in layers:
        mine = [p for p in chosen if p.target.name == target.name]
        mine.sort(key=lambda p: (p.k, p.source.depth))
        kept += mine[:per_target]
        left_out += [
            LeftOut(p.source.name, target.name, f"over the per-target limit of {per_target}")
            for p in mine[per_target:]
        ]
    return kept, left_out


def _ordered_unique(chosen: list[Pair], layers: list[Layer], sources: list[Source]) -> list[Pair]:
    """The pairs ordered by target, then source, each (source, target) once.

    Args:
        chosen: the pairs.
        layers: the sequential layers (for the target order).
        sources: every source (for the source order).

    Returns:
        The ordered pairs without repeats.
    """
    order = {layer.name: layer.index for layer in layers}
    source_order = {s.name: position for position, s in enumerate(sources)}
    ordered = sorted(chosen, key=lambda p: (order[p.target.name], source_order[p.source.name]))
    seen: set[tuple[str, str]] = set()
    unique = []
    for pair in ordered:
        key = (pair.source.name, pair.target.name)
        if key not in seen:
            seen.add(key)
            unique.append(pair)
    return unique


def _leading(model: Model, tensor: str):
    shape = model.index.shape(tensor)
    return shape[0] if shape else None


def _with_k(pair: Pair, k: int) -> Pair:
    from dataclasses import replace

    return replace(pair, k=k)


def _structural_reason(source: Source, target: Layer, reach: dict[str, set[str]]) -> str | None:
    if source.name == target.name:
        return "a layer cannot skip to itself"
    if target.name not in reach.get(source.name, set()):
        return "the target is not downstream of the source (a skip would form a cycle)"
    if any(edge.source == source.name for edge in target.fed_by):
        return "the target consumes the source directly (a sequential connection)"
    if target.depth - source.depth < 2:
        return f"k = {target.depth - source.depth} < 2"
    return None


def _find_source(model: Model, by_name: dict[str, Source], name: str) -> Source:
    for key in (name, f"input:{name}"):
        if key in by_name:
            return by_name[key]
    for layer in sequential_layers(model):
        if name == layer.weight:
            return by_name[layer.name]
    raise InvalidArgumentError(f"unknown skip source {name!r}; sources: {sorted(by_name)}")


def _find_target(layers: list[Layer], name: str) -> Layer:
    for layer in layers:
        if name in (layer.name, layer.weight):
            return layer
    raise InvalidArgumentError(
        f"unknown skip target {name!r}; layers: {[layer.name for layer in layers]}"
    )
