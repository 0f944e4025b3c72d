"""``prune_structured``: remove whole units (filters, neurons) of a trained model, in one shot.

The options are validated once (:class:`~n2nonnx.structured.options.StructuredOptions`);
the method ranks the units (:mod:`.orders`: ``snacs``, ``l1``, ``random``); the ranking is
walked within the per-layer limits until the prune level is met (:mod:`.selection`); the
result may be fine-tuned.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from n2nonnx import metadata
from n2nonnx.errors import DataError, InvalidArgumentError
from n2nonnx.model import Model
from n2nonnx.structured.options import FINETUNE_DEFAULTS, StructuredOptions

log = logging.getLogger(__name__)

__all__ = ["StructuredResult", "prune_structured", "prune_structured_with"]


@dataclass
class StructuredResult:
    """What :func:`prune_structured` returns.

    Attributes:
        model: the smaller model (fine-tuned when asked), with a ``structured_prune`` record.
        method: ``snacs``, ``l1`` or ``random``.
        removed: layer name -> removed unit indices (ascending).
        params_before / params_after: parameters (floating initializers) of the input and output.
        flops_before / flops_after: FLOPs of one sample through the layers (see
            :func:`~n2nonnx.structured.accounting.layer_flops`).
        decision_seconds: time to decide and apply the removal (activations, scores,
            constraints, cut), fine-tuning excluded.
        upper_limits: SNACS's per-layer limits (fraction of units), empty for the baselines.
        protected: layer name -> units protected by sensitivity (SNACS).
        fixed: layer name -> units that cannot be removed (graph outputs, refused couplings).
        finetune: the :class:`~n2nonnx.training.TrainResult` when fine-tuned, else None.
    """

    model: Model
    method: str
    removed: dict[str, list[int]]
    params_before: int
    params_after: int
    flops_before: int
    flops_after: int
    decision_seconds: float
    upper_limits: dict[str, float] = field(default_factory=dict)
    protected: dict[str, int] = field(default_factory=dict)
    fixed: dict[str, int] = field(default_factory=dict)
    finetune: Any = None

    @property
    def params_kept(self) -> float:
        """Fraction of the parameters kept."""
        return self.params_after / max(self.params_before, 1)

    @property
    def flops_kept(self) -> float:
        """Fraction of the layer FLOPs kept."""
        return self.flops_after / max(self.flops_before, 1)


def prune_structured(
    model: Model,
    method: str = "snacs",
    *,
    data: Any = None,
    progress: bool = False,
    finetune: Any = None,
    **options: Any,
) -> StructuredResult:
    """Remove whole units (filters, neurons) of a trained model; returns the smaller model.

    Args:
        model: a trained model.
        method: ``snacs``, ``l1`` (L1-norm filter pruning) or ``random``.
        data: anything :func:`n2nonnx.data.resolve_data` accepts; SNACS scores units on its
            training split, fine-tuning trains on it. Needed by ``snacs`` and by fine-tuning.
        progress: log each step at INFO level.
        finetune: a :class:`~n2nonnx.training.TrainConfig` for the fine-tuning (default:
            :data:`FINETUNE_DEFAULTS`, the authors' retraining recipe).
        **options: the fields of :class:`~n2nonnx.structured.options.StructuredOptions`,
            each with its default and meaning there: the prune level (``prune_percent``
            removed, in (0, 100), or ``target_params`` kept, in (0, 1)), ``align`` (kept
            unit counts rounded to a multiple, 16), SNACS's ``groups``, ``samples_per_class``,
            ``phi``, ``estimator``, ``upper_limit``, ``rule`` and ``protect``, ``seed`` and
            ``finetune_epochs``.

    Returns:
        A :class:`StructuredResult`.

    Raises:
        InvalidArgumentError: an option out of range or unknown, or a prune level the method
            cannot reach without emptying a layer (or passing its limits).
        DataError: SNACS or fine-tuning without data, or data that does not fit the model.
    """
    from dataclasses import fields

    known = {f.name for f in fields(StructuredOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise InvalidArgumentError(
            f"prune_structured: unknown option(s) {unknown}; the options are {sorted(known - {'method'})}"
        )
    settings = StructuredOptions(method=method, **options)
    return prune_structured_with(model, settings, data=data, progress=progress, finetune=finetune)


def prune_structured_with(
    model: Model,
    settings: StructuredOptions,
    *,
    data: Any = None,
    progress: bool = False,
    finetune: Any = None,
) -> StructuredResult:
    """:func:`prune_structured` with its options already made (and validated).

    Args:
        model: a trained model.
        settings: the options.
        data: the data SNACS scores on and fine-tuning trains on.
        progress: log each step at INFO level.
        finetune: a :class:`~n2nonnx.training.TrainConfig` for the fine-tuning.

    Returns:
        A :class:`StructuredResult`.
    """
    from n2nonnx.structured import baselines, snacs  # noqa: F401  (they fill the registry)
    from n2nonnx.structured.orders import RankingContext, get_method

    started = time.perf_counter()
    method = get_method(settings.method)
    needs_data = method.needs_data or settings.finetune_epochs > 0
    if needs_data and data is None:
        what = "SNACS scores units on activations" if method.needs_data else "fine-tuning trains"
        raise DataError(
            f"{what} and needs data: pass data= (--data mnist1d, digits, synthetic or an .npz file)"
        )
    from n2nonnx.structured.checks import check_finite_weights

    check_finite_weights(model)
    dataset = _resolve(model, data) if data is not None else None
    if method.needs_trained:
        from n2nonnx.structured.checks import warn_if_untrained

        warn_if_untrained(model)

    from n2nonnx.structured.accounting import layer_flops
    from n2nonnx.structured.rounding import align_cut
    from n2nonnx.structured.selection import admissible, cut_to_target, removal_request
    from n2nonnx.units import remove_units
    from n2nonnx.units.coupling import find_components

    params_before, flops_before = model.parameter_count, layer_flops(model)
    target = int(math.floor(settings.kept_fraction * params_before))
    components = find_components(model)
    fixed = _count_units(c for c in components if c.fixed)
    caps = {layer.name: layer.units - 1 for layer in model.layers}
    ranking = method.rank(RankingContext(model, components, dataset, settings, progress))
    for name, limit in ranking.limits.items():
        layer_units = model.layer(name).units
        caps[name] = min(caps[name], int(math.floor(limit * layer_units + 1e-9)))
    sequence = admissible(ranking.order, caps)
    chosen, reduced = cut_to_target(model, sequence, target, method.name)
    if settings.align > 1:
        chosen = align_cut(
            model,
            sequence,
            len(chosen),
            settings.align,
            lambda some: remove_units(model, removal_request(some)).parameter_count,
            target,
        )
        reduced = remove_units(model, removal_request(chosen))
    removed = removal_request(chosen)
    proto = reduced.proto
    metadata.append_stage(
        proto,
        "structured_prune",
        method=method.name,
        params_before=params_before,
        params_after=reduced.parameter_count,
        removed={k: len(v) for k, v in removed.items()},
        **settings.record(),
    )
    reduced = model.with_proto(proto)
    decision = time.perf_counter() - started
    log.info(
        "%s removed %d units in %.2fs: %d -> %d parameters",
        method.name,
        sum(len(v) for v in removed.values()),
        decision,
        params_before,
        reduced.parameter_count,
    )
    trained = None
    if settings.finetune_epochs > 0:
        from n2nonnx.training import TrainConfig, train

        recipe = (
            finetune
            if finetune is not None
            else TrainConfig.from_options(None, **FINETUNE_DEFAULTS)
        )
        trained = train(
            reduced, dataset, recipe, progress=progress, epochs=settings.finetune_epochs
        )
        reduced = trained.model
    return StructuredResult(
        model=reduced,
        method=method.name,
        removed=removed,
        params_before=params_before,
        params_after=reduced.parameter_count,
        flops_before=flops_before,
        flops_after=layer_flops(reduced),
        decision_seconds=decision,
        upper_limits=ranking.limits,
        protected=ranking.protected,
        fixed=fixed,
        finetune=trained,
    )


def _count_units(components) -> dict[str, int]:
    counts: dict[str, int] = {}
    for component in components:
        for name, _ in component.units:
            counts[name] = counts.get(name, 0) + 1
    return counts


def _resolve(model: Model, data: Any):
    from n2nonnx.data import check_classes, model_input, resolve_data

    spec = model_input(model.proto)
    dataset = resolve_data(data, input_shape=spec.shape, input_name=spec.name)
    check_classes(model, dataset)  # before the scores: a label past the outputs is no class
    if len(dataset.x_train) < 2:  # as training, SCL, snip and grasp
        raise DataError(
            f"the training split has {len(dataset.x_train)} sample(s); need at least 2 to score "
            "the units (and to fine-tune): pass more data"
        )
    return dataset
