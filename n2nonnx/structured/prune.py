"""Structured pruning of a trained model: remove whole filters and neurons, in one shot.

    result = prune_structured(model, "snacs", data="mnist1d", prune_percent=50)
    result.model            # smaller weight tensors, runs in onnxruntime as it is
    result.removed          # layer name -> removed unit indices

Methods: ``snacs`` (Ganesh, Blanchard, Corso & Sekeh, "Slimming Neural networks using
Adaptive Connectivity Scores"): connectivity scores from conditional mutual information of
activations (:mod:`.scores`, :mod:`.edge`), per-layer operating constraints
(:mod:`.constraints`), sensitivity protection (:mod:`.sensitivity`), one global cut; and
the baselines ``l1`` (Li et al. 2017) and ``random`` (:mod:`.baselines`). All three remove
exactly as many parameters (to one coupled group of units), through
:func:`~n2nonnx.deployment.structured.remove_units`; coupled channels (residual adds,
depthwise groups) are removed together or kept (:mod:`.coupling`).

The prune level is a share of the model's parameters (``prune_percent`` removed, or
``target_params`` kept); the paper's quantile of connection scores becomes the shortest
prefix of the SNACS ranking that reaches it (:mod:`.selection`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from n2nonnx import metadata
from n2nonnx.errors import DataError, InvalidArgumentError
from n2nonnx.model import Model

log = logging.getLogger(__name__)

METHODS = ("snacs", "l1", "random")
ESTIMATOR_NAMES = ("edge", "knn", "binned")
PHI_NAMES = ("w", "w2", "exp")
LIMIT_RULES = ("lstsq", "svm")

#: Fine-tuning recipe of the authors' retraining code (SGD, momentum 0.9, lr 1e-3, batch 128,
#: weight decay 1e-4, constant rate over short runs).
FINETUNE_DEFAULTS: dict[str, Any] = {
    "optimizer": "sgd",
    "lr": 1e-3,
    "momentum": 0.9,
    "batch_size": 128,
    "weight_decay": 1e-4,
    "schedule": "none",
}

__all__ = ["FINETUNE_DEFAULTS", "METHODS", "StructuredResult", "prune_structured"]


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
    prune_percent: float | None = None,
    target_params: float | None = None,
    groups: int = 8,
    samples_per_class: int = 250,
    phi: str = "w",
    estimator: str = "edge",
    upper_limit: str | float = "lstsq",
    rule: float = 0.7,
    protect: float = 0.75,
    seed: int = 0,
    progress: bool = False,
    finetune_epochs: int = 0,
    finetune: Any = None,
) -> StructuredResult:
    """Remove whole units (filters, neurons) of a trained model; returns the smaller model.

    Args:
        model: a trained model.
        method: ``snacs``, ``l1`` (L1-norm filter pruning) or ``random``.
        data: anything :func:`n2nonnx.data.resolve_data` accepts; SNACS scores units on its
            training split, fine-tuning trains on it. Needed by ``snacs`` and by fine-tuning.
        prune_percent: percentage of the model's parameters to remove, in (0, 100).
        target_params: fraction of the parameters to keep, in (0, 1) (instead of
            ``prune_percent``).
        groups: SNACS groups of units per layer (8, the authors' default).
        samples_per_class: samples per class the activations are collected on (250).
        phi: weight scaling of the scores: ``w`` (default), ``w2`` or ``exp`` (exp(-w^2/2)).
        estimator: conditional MI estimator: ``edge`` (default), ``knn`` or ``binned``.
        upper_limit: per-layer limits: the classifier sweep of :mod:`.constraints` with a
            least-squares linear classifier (``lstsq``, default) or a linear SVM (``svm``),
            or a fraction in (0, 1] used for every layer (the authors' fallback is 0.75).
        rule: the sweep's tolerance factor: the limit is the largest percentage with
            accuracy >= max - rule * (max - min) (0.7).
        protect: fraction of each layer's most sensitive units never removed by SNACS
            (0.75, the authors' ``save_children``; 0 disables). See :mod:`.sensitivity`.
        seed: seed of the sample draw, the estimator's hashes, the SVM and random pruning.
        progress: log each step at INFO level.
        finetune_epochs: train the result this many epochs on ``data`` (0: no fine-tuning).
        finetune: a :class:`~n2nonnx.training.TrainConfig` for the fine-tuning (default:
            :data:`FINETUNE_DEFAULTS`, the authors' retraining recipe).

    Returns:
        A :class:`StructuredResult`.

    Raises:
        InvalidArgumentError: an option out of range, or a prune level the method cannot
            reach without emptying a layer (or passing its limits).
        DataError: SNACS or fine-tuning without data, or data that does not fit the model.
    """
    started = time.perf_counter()
    _check_options(
        method,
        prune_percent,
        target_params,
        groups,
        samples_per_class,
        phi,
        estimator,
        upper_limit,
        rule,
        protect,
        finetune_epochs,
    )
    needs_data = method == "snacs" or finetune_epochs > 0
    if needs_data and data is None:
        what = "SNACS scores units on activations" if method == "snacs" else "fine-tuning trains"
        raise DataError(
            f"{what} and needs data: pass data= (--data mnist1d, digits, synthetic or an .npz file)"
        )
    dataset = _resolve(model, data) if data is not None else None
    if method != "random":
        from n2nonnx.structured.checks import warn_if_untrained

        warn_if_untrained(model)

    from n2nonnx.structured.accounting import layer_flops
    from n2nonnx.structured.coupling import find_components
    from n2nonnx.structured.selection import admissible, cut_to_target, removal_request

    params_before, flops_before = model.parameter_count, layer_flops(model)
    # _check_options let exactly one of the two levels through
    keep = target_params if target_params is not None else 1 - cast(float, prune_percent) / 100.0
    target = int(math.floor(keep * params_before))
    components = find_components(model)
    fixed = _count_units(c for c in components if c.fixed)
    caps = {layer.name: layer.units - 1 for layer in model.layers}
    limits: dict[str, float] = {}
    protected: dict[str, int] = {}
    if method == "snacs":
        order, limits, protected = _snacs_order(
            model,
            components,
            dataset,
            groups=groups,
            samples_per_class=samples_per_class,
            phi=phi,
            estimator=estimator,
            upper_limit=upper_limit,
            rule=rule,
            protect=protect,
            seed=seed,
            progress=progress,
        )
        for name, limit in limits.items():
            layer_units = model.layer(name).units
            caps[name] = min(caps[name], int(math.floor(limit * layer_units + 1e-9)))
    elif method == "l1":
        from n2nonnx.structured.baselines import l1_order

        order = l1_order(model, components)
    else:
        from n2nonnx.structured.baselines import random_order

        order = random_order(model, components, seed)
    sequence = admissible(order, caps)
    chosen, reduced = cut_to_target(model, sequence, target, method)
    removed = removal_request(chosen)
    proto = reduced.proto
    metadata.append_stage(
        proto,
        "structured_prune",
        method=method,
        params_before=params_before,
        params_after=reduced.parameter_count,
        removed={k: len(v) for k, v in removed.items()},
        prune_percent=prune_percent,
        target_params=target_params,
        **(
            {
                "groups": groups,
                "samples_per_class": samples_per_class,
                "phi": phi,
                "estimator": estimator,
                "upper_limit": upper_limit,
                "rule": rule,
                "protect": protect,
            }
            if method == "snacs"
            else {}
        ),
        seed=seed,
    )
    reduced = model.with_proto(proto)
    decision = time.perf_counter() - started
    log.info(
        "%s removed %d units in %.2fs: %d -> %d parameters",
        method,
        sum(len(v) for v in removed.values()),
        decision,
        params_before,
        reduced.parameter_count,
    )
    trained = None
    if finetune_epochs > 0:
        from n2nonnx.training import TrainConfig, train

        recipe = (
            finetune
            if finetune is not None
            else TrainConfig.from_options(None, **FINETUNE_DEFAULTS)
        )
        trained = train(reduced, dataset, recipe, progress=progress, epochs=finetune_epochs)
        reduced = trained.model
    return StructuredResult(
        model=reduced,
        method=method,
        removed=removed,
        params_before=params_before,
        params_after=reduced.parameter_count,
        flops_before=flops_before,
        flops_after=layer_flops(reduced),
        decision_seconds=decision,
        upper_limits=limits,
        protected=protected,
        fixed=fixed,
        finetune=trained,
    )


def _snacs_order(
    model,
    components,
    dataset,
    *,
    groups,
    samples_per_class,
    phi,
    estimator,
    upper_limit,
    rule,
    protect,
    seed,
    progress,
):
    """SNACS's removal order, upper limits and protected-unit counts."""
    from n2nonnx.structured.activations import ActivationProbe, class_sample
    from n2nonnx.structured.constraints import upper_limits
    from n2nonnx.structured.estimators import make_estimator
    from n2nonnx.structured.scores import unit_scores
    from n2nonnx.structured.sensitivity import protected_units, sensitivities
    from n2nonnx.structured.weights import network_range

    layers = {layer.name: layer for layer in model.layers}
    candidates = {name for c in components if not c.fixed for name in c.layers}
    parents = [layers[n] for n in layers if n in candidates]
    children = {
        p.name: sorted(
            {layers[e.target] for e in p.feeds if e.target in layers}, key=lambda la: la.index
        )
        for p in parents
    }
    observed = sorted(
        {p.name for p in parents} | {c.name for cs in children.values() for c in cs},
        key=lambda n: layers[n].index,
    )
    sample = class_sample(dataset.x_train.numpy(), dataset.y_train.numpy(), samples_per_class, seed)
    activations = ActivationProbe(model, [layers[n] for n in observed], sample).run()
    _log(progress, "activations of %d layers on %d samples", len(observed), len(sample.y))
    value_range = network_range(model)
    scores = unit_scores(
        model,
        parents,
        activations,
        make_estimator(estimator, len(sample.y), seed),
        groups=groups,
        phi=phi,
        value_range=value_range,
    )
    _log(progress, "ACMI scores of %d layers", len(parents))
    sensitivity = sensitivities(model, value_range)
    shielded = {p.name: protected_units(sensitivity[p.name], protect) for p in parents}

    def key(component):
        return (
            max(scores[n][u] for n, u in component.units),
            max(sensitivity[n][u] for n, u in component.units),
        )

    ranked = sorted((c for c in components if not c.fixed), key=key)
    order = [c for c in ranked if not any(shielded[n][u] for n, u in c.units)]
    if isinstance(upper_limit, str):
        # The sweep ranks every removable unit, protected ones included (the authors'
        # sweep runs with save_children = 0).
        per_layer = {
            p.name: np.asarray(
                [u for c in ranked for n, u in c.units if n == p.name], dtype=np.int64
            )
            for p in parents
        }
        limits = upper_limits(
            model,
            sample,
            parents,
            per_layer,
            children,
            rule=rule,
            classifier=upper_limit,
            seed=seed,
        )
        _log(progress, "upper limits: %s", {k: round(v, 2) for k, v in limits.items()})
    else:
        limits = {p.name: float(upper_limit) for p in parents}
    return order, limits, {name: int(mask.sum()) for name, mask in shielded.items()}


def _log(progress: bool, message: str, *args: Any) -> None:
    (log.info if progress else log.debug)(message, *args)


def _count_units(components) -> dict[str, int]:
    counts: dict[str, int] = {}
    for component in components:
        for name, _ in component.units:
            counts[name] = counts.get(name, 0) + 1
    return counts


def _resolve(model: Model, data: Any):
    from n2nonnx.data import model_input, resolve_data

    spec = model_input(model.proto)
    return resolve_data(data, input_shape=spec.shape, input_name=spec.name)


def _check_options(
    method,
    prune_percent,
    target_params,
    groups,
    samples_per_class,
    phi,
    estimator,
    upper_limit,
    rule,
    protect,
    finetune_epochs,
) -> None:
    if method not in METHODS:
        raise InvalidArgumentError(
            f"unknown structured pruning method {method!r}; choose from {', '.join(METHODS)}"
        )
    if (prune_percent is None) == (target_params is None):
        raise InvalidArgumentError(
            "give exactly one prune level: prune_percent (--prune-percent) or "
            "target_params (--target-params)"
        )
    if prune_percent is not None and not (_number(prune_percent) and 0 < prune_percent < 100):
        raise InvalidArgumentError(
            f"prune_percent must be in (0, 100) (percent of parameters removed), got {prune_percent!r}"
        )
    if target_params is not None and not (_number(target_params) and 0 < target_params < 1):
        raise InvalidArgumentError(
            f"target_params must be in (0, 1) (fraction of parameters kept), got {target_params!r}"
        )
    if not (isinstance(groups, int) and groups >= 1):
        raise InvalidArgumentError(f"groups must be an integer >= 1, got {groups!r}")
    if not (isinstance(samples_per_class, int) and samples_per_class >= 2):
        raise InvalidArgumentError(
            f"samples_per_class must be an integer >= 2, got {samples_per_class!r}"
        )
    if phi not in PHI_NAMES:
        raise InvalidArgumentError(f"unknown phi {phi!r}; choose from {', '.join(PHI_NAMES)}")
    if estimator not in ESTIMATOR_NAMES:
        raise InvalidArgumentError(
            f"unknown MI estimator {estimator!r}; choose from {', '.join(ESTIMATOR_NAMES)}"
        )
    if isinstance(upper_limit, str):
        if upper_limit not in LIMIT_RULES:
            raise InvalidArgumentError(
                f"upper_limit must be {' or '.join(LIMIT_RULES)} or a fraction in (0, 1], got {upper_limit!r}"
            )
    elif not (_number(upper_limit) and 0 < upper_limit <= 1):
        raise InvalidArgumentError(
            f"upper_limit as a number must be a fraction in (0, 1], got {upper_limit!r}"
        )
    if not (_number(rule) and 0 <= rule <= 1):
        raise InvalidArgumentError(f"rule must be in [0, 1], got {rule!r}")
    if not (_number(protect) and 0 <= protect < 1):
        raise InvalidArgumentError(
            f"protect must be in [0, 1) (fraction of each layer's units kept), got {protect!r}"
        )
    if not (isinstance(finetune_epochs, int) and finetune_epochs >= 0):
        raise InvalidArgumentError(
            f"finetune_epochs must be an integer >= 0, got {finetune_epochs!r}"
        )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
