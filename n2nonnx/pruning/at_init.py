"""Pruning at initialization: score the weights, allocate a budget per layer, mask in the graph.

    pruned = prune(model, "snip", density=0.05, data="mnist1d", allocation="global")

:func:`prune` validates its options once (:class:`~n2nonnx.pruning.options.PruneOptions`),
scores with a registered criterion (:data:`n2nonnx.pruning.registry.CRITERIA`) or takes
user-supplied masks, and writes a mask initializer per pruned weight (see
:mod:`n2nonnx.masks`) and a ``prune`` record into the result's metadata.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from n2nonnx import metadata
from n2nonnx.errors import DataError, InvalidArgumentError
from n2nonnx.masks import apply_masks, mask_arrays
from n2nonnx.model import Model
from n2nonnx.patterns import matches
from n2nonnx.pruning.allocation import layer_counts, masks_from_scores
from n2nonnx.pruning.criteria import ScoringContext, get_criterion
from n2nonnx.pruning.options import PruneOptions

__all__ = [
    "LayerCount",
    "format_prune_table",
    "prune",
    "prune_table",
    "rescaled_weight",
    "select_layers",
]


@dataclass(frozen=True)
class LayerCount:
    """Kept and total weights of one layer after pruning."""

    layer: str
    weight: str
    kept: int
    total: int

    @property
    def density(self) -> float:
        """The kept fraction of the layer's weights (0 for an empty layer)."""
        return self.kept / max(self.total, 1)


def prune(
    model: Model,
    method: str = "snip",
    density: float = 0.1,
    *,
    allocation: str = "global",
    data: Any = None,
    batch_size: int = 128,
    seed: int = 0,
    exclude: Sequence[str] = (),
    first_last_density: float | None = None,
    masks: str | Path | Mapping[str, np.ndarray] | None = None,
    options: Mapping[str, Any] | None = None,
    rescale: bool = False,
    progress: bool = False,
    repair: bool = False,
) -> Model:
    """Prune ``model`` at initialization; returns a new model with masks in the graph.

    Args:
        model: a loaded model (dense, or already masked: kept weights stay candidates,
            pruned ones stay pruned).
        method: a registered criterion (``random``, ``expander``, ``magnitude``, ``snip``
            / ``csp``, ``grasp``, ``synflow``) or ``masks`` with ``masks=`` given.
        density: fraction of the prunable weights kept, in (0, 1].
        allocation: ``global`` (one threshold), ``uniform`` or ``erk``.
        data: data for data-driven methods: a built-in name, an ``.npz`` path, arrays,
            a torch dataset (see :func:`n2nonnx.data.resolve_data`).
        batch_size: SNIP's mini-batch size.
        seed: seed of every random choice (batch sampling, random scores).
        exclude: layer or weight names / glob / regex patterns left dense and out of the
            budget; a pattern that matches nothing is an error.
        first_last_density: keep the first and last layers at this density (counted in
            the budget; the others share what is left).
        masks: user-supplied masks (an ``.npz`` keyed by weight name, or a dict): used
            as they are, no scoring.
        options: criterion options: ``temperature`` and ``samples_per_class`` (GraSP),
            ``iterations`` and ``precision`` (SynFlow: ``float64``, default, or ``float32``).
        rescale: multiply each unit's kept weights by ``sqrt(fan_in / kept fan_in)`` so its
            pre-activation keeps the variance it had dense (fan-in-corrected init).
        progress: show progress bars (SynFlow rounds, SNIP / GraSP chunks) on a terminal.
        repair: move the kept weights that lie on no input-to-output path onto live paths,
            by the criterion's next-best scores (random order for user masks), keeping the
            count (see :func:`n2nonnx.connectivity.repair_dead_weights`); before ``rescale``.

    Returns:
        The pruned model; its metadata holds a ``prune`` record with per-layer counts
        (and a ``repair`` record after it with ``repair``).
    """
    settings = PruneOptions.from_call(
        options,
        method=method,
        density=density,
        allocation=allocation,
        batch_size=batch_size,
        seed=seed,
        exclude=tuple(exclude),
        first_last_density=first_last_density,
        rescale=rescale,
        repair=repair,
    )
    return prune_with(model, settings, data=data, masks=masks, progress=progress)


def prune_with(
    model: Model,
    settings: PruneOptions,
    *,
    data: Any = None,
    masks: str | Path | Mapping[str, np.ndarray] | None = None,
    progress: bool = False,
) -> Model:
    """:func:`prune` with its options already made (and validated) as a :class:`PruneOptions`.

    Args:
        model: a loaded model.
        settings: the options.
        data: data for data-driven criteria.
        masks: user-supplied masks, used instead of ``settings.method``.
        progress: show progress bars.

    Returns:
        The pruned model (see :func:`prune`).
    """
    density, allocation, seed = settings.density, settings.allocation, settings.seed
    exclude, repair = settings.exclude, settings.repair
    batch_size, first_last_density = settings.batch_size, settings.first_last_density
    options = settings.criterion_options
    selected = select_layers(model, exclude)
    weights = list(dict.fromkeys(layer.weight for layer in selected))  # a shared weight once
    prunable = sum(layer.parameters for layer in selected)
    if masks is None and density * prunable < 1:
        raise InvalidArgumentError(
            f"density {density:g} keeps no weight of the {prunable:,} prunable weights; the smallest "
            f"density that keeps one is {1 / max(prunable, 1):.3g}"
        )
    scores: dict[str, np.ndarray] | None = None
    if masks is not None:
        new_masks = _user_masks(model, masks, weights)
        method_name = "masks"
    else:
        criterion = get_criterion(settings.method)
        method_name = criterion.name
        dataset = _resolve(model, data, seed) if criterion.needs_data else None
        if criterion.needs_data and dataset is None:
            raise DataError(
                f"method {criterion.name!r} needs data to score the weights; pass data= "
                "(--data mnist1d, digits, synthetic or an .npz file), or use a data-free "
                "method (random, expander, magnitude, synflow)"
            )
        sizes = {w: int(np.prod(model.initializer(w).shape)) for w in weights}
        shapes = {w: tuple(model.initializer(w).shape) for w in weights}
        fixed = _first_last(selected, first_last_density)

        def allocate(scores: dict[str, np.ndarray], target: float) -> dict[str, np.ndarray]:
            counts = layer_counts(sizes, shapes, target, allocation, fixed)
            return masks_from_scores(scores, target, counts)

        rng = np.random.default_rng(seed)
        context = ScoringContext(
            model=_scores_model(model),
            weights=weights,
            density=float(density),
            rng=rng,
            data=dataset,
            batch_size=batch_size,
            allocate=allocate,
            progress=progress,
            options={
                "sample_shape": _sample_shape(model) if criterion.name == "synflow" else (),
                **options,
            },
        )
        scores = criterion.score(context)
        existing = mask_arrays(model)
        scores = {
            w: np.where(existing[w] > 0, s, -np.inf) if w in existing else s
            for w, s in scores.items()
        }
        new_masks = allocate(scores, float(density))
    # With repair the dense values stay under the masks, so regrown weights get them back.
    pruned = apply_masks(model, new_masks, zero_weights=not repair)
    repaired = None
    if repair:
        from n2nonnx.connectivity import repair_model

        existing = mask_arrays(model)  # pruned before: those positions stay pruned
        pruned, repaired = repair_model(
            pruned,
            scores=scores,
            seed=seed,
            weights=list(new_masks),
            allowed={w: existing[w] > 0 for w in new_masks if w in existing},
        )
    if settings.rescale:
        pruned = pruned.with_initializers({w: rescaled_weight(pruned, w) for w in new_masks})
    counts = prune_table(pruned, weights)
    kept, total = sum(c.kept for c in counts), sum(c.total for c in counts)
    record = {
        "method": method_name,
        "density": float(density),
        "achieved_density": kept / max(total, 1),
        "allocation": allocation if masks is None else "given",
        "seed": seed,
        "batch_size": batch_size if method_name == "snip" else None,
        "exclude": list(exclude),
        "first_last_density": first_last_density,
        "rescale": settings.rescale,
        "repair": repair,
        "options": dict(options),
        "layers": [
            {"layer": c.layer, "weight": c.weight, "kept": c.kept, "total": c.total} for c in counts
        ],
    }
    metadata.append_stage(pruned.proto, "prune", **record)  # our own fresh proto
    if repaired is not None:
        metadata.append_stage(pruned.proto, "repair", **repaired.to_dict())
    return pruned


def rescaled_weight(model: Model, weight: str) -> np.ndarray:
    """``weight`` with each unit's kept entries scaled by ``sqrt(fan_in / kept fan_in)``."""
    layer = model.layer(weight)
    value = np.moveaxis(model.effective_weight(layer), layer.unit_axis, 0)
    kept = np.count_nonzero(value.reshape(layer.units, -1), axis=1)
    fan_in = value[0].size
    scale = np.sqrt(fan_in / np.maximum(kept, 1)).astype(value.dtype)
    value = value * scale.reshape(-1, *([1] * (value.ndim - 1)))
    return np.moveaxis(value, 0, layer.unit_axis)


def select_layers(model: Model, exclude: Sequence[str] = ()):
    """The layers to prune: all but those matching an ``exclude`` pattern and N2NSkip ones."""
    layers = [layer for layer in model.layers if not layer.is_skip]
    for pattern in exclude:
        matched = [
            layer
            for layer in layers
            if matches(layer.name, pattern) or matches(layer.weight, pattern)
        ]
        if not matched:
            raise InvalidArgumentError(
                f"exclusion pattern {pattern!r} matches no layer; layer names are "
                f"{[layer.name for layer in layers]} and weights {[layer.weight for layer in layers]}"
            )
        layers = [layer for layer in layers if layer not in matched]
    if not layers:
        raise InvalidArgumentError("every layer is excluded; nothing is left to prune")
    return layers


def prune_table(model: Model, weights: Sequence[str] | None = None) -> list[LayerCount]:
    """Kept / total weights per layer (``weights`` limits it to some layers).

    A weight that several layers share (exporters merge identical initializers) is counted
    once, in the row of the first layer that uses it.
    """
    rows = []
    seen: set[str] = set()
    for layer in model.layers:
        if (weights is not None and layer.weight not in weights) or layer.weight in seen:
            continue
        seen.add(layer.weight)
        kept = int(np.count_nonzero(model.effective_weight(layer)))
        rows.append(LayerCount(layer.name, layer.weight, kept, layer.parameters))
    return rows


def format_prune_table(rows: Sequence[LayerCount]) -> str:
    """The per-layer table printed by ``n2nonnx prune``."""
    width = max([len(r.layer) for r in rows] + [5])
    lines = [f"{'layer':<{width}}  {'kept':>10}  {'total':>10}  density", "-" * (width + 34)]
    lines += [f"{r.layer:<{width}}  {r.kept:>10,}  {r.total:>10,}  {r.density:7.2%}" for r in rows]
    kept, total = sum(r.kept for r in rows), sum(r.total for r in rows)
    lines.append(f"{'total':<{width}}  {kept:>10,}  {total:>10,}  {kept / max(total, 1):7.2%}")
    return "\n".join(lines)


def _first_last(layers, density: float | None) -> dict[str, float]:
    if density is None:
        return {}
    if len(layers) < 2:
        return {layers[0].weight: density}
    return {layers[0].weight: density, layers[-1].weight: density}


def _scores_model(model: Model) -> Model:
    """The model cut down to its class-score output, for data-driven scoring."""
    from n2nonnx.graph.outputs import scores_only

    proto = scores_only(model.proto)
    return model if proto is model.proto else model.with_proto(proto)


def _sample_shape(model: Model) -> tuple[int, ...]:
    info = model.graph_inputs[0]
    shape = info.shape or ()
    sample = tuple(d for d in shape[1:] if isinstance(d, int))
    if len(sample) != len(shape[1:]):
        from n2nonnx.errors import ShapeError

        raise ShapeError(
            f"input {info.name!r} has shape {shape} with unknown sizes besides the batch; pass "
            "input_shapes to load (CLI: --input-shape NAME=1x3x32x32)"
        )
    return sample


def _resolve(model: Model, data: Any, seed: int):
    if data is None:
        return None
    from n2nonnx.data import check_classes, check_float32_input, resolve_data

    check_float32_input(model, "data-driven scoring")
    info = model.graph_inputs[0]
    dataset = resolve_data(data, input_shape=info.shape, seed=seed, input_name=info.name)
    check_classes(model, dataset)
    if len(dataset.x_train) < 2:  # as training and SCL: a batch of one is no sample of the data
        raise DataError(
            f"the training split has {len(dataset.x_train)} sample(s); need at least 2 to score "
            "the weights: pass more data"
        )
    return dataset


def _user_masks(
    model: Model, masks: str | Path | Mapping[str, np.ndarray], weights: list[str]
) -> dict[str, np.ndarray]:
    if isinstance(masks, (str, Path)):
        path = Path(masks)
        if not path.is_file():
            raise DataError(f"mask file {path} does not exist")
        if not zipfile.is_zipfile(path):
            raise DataError(
                f"cannot read masks from {path}: it is not an .npz archive; save them with "
                "numpy.savez"
            )
        from n2nonnx.data.adapters import check_npz_sizes

        check_npz_sizes(path)  # a forged header (10**12 rows) is refused before loading
        try:
            with np.load(path) as archive:
                masks = {key: archive[key] for key in archive.files}
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            raise DataError(
                f"cannot read masks from {path}: {error}; save them with numpy.savez"
            ) from None
    unknown = sorted(set(masks) - set(weights))
    if unknown:
        raise InvalidArgumentError(
            f"masks given for {unknown}, which are not prunable weights; weights are {weights}"
        )
    arrays = {}
    for name, value in masks.items():
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise DataError(
                f"the mask of {name!r} holds {array.dtype} values; masks are 0/1 (or bool) arrays"
            )
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise DataError(
                f"the mask of {name!r} holds NaN or infinite values; masks are 0/1 (or bool) arrays"
            )
        arrays[name] = (array != 0).astype(np.float32)
    if arrays and not any(array.any() for array in arrays.values()):
        raise DataError(
            "the masks keep no weight at all; a mask keeps a weight where it is non-zero"
        )
    return arrays
