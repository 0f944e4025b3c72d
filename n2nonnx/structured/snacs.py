"""SNACS's ranking: connectivity scores, operating limits and sensitivity protection.

Ganesh, Blanchard, Corso & Sekeh, "Slimming Neural networks using Adaptive Connectivity
Scores": units are ranked by connection scores from conditional mutual information of
activations (:mod:`.scores`, :mod:`.estimators`) and then by sensitivity; each layer gets
an upper limit from a classifier sweep (:mod:`.constraints`) or a fixed fraction; the most
sensitive units are protected (:mod:`.sensitivity`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from n2nonnx.structured.orders import Ranking, RankingContext, structured_method

log = logging.getLogger(__name__)


@structured_method(
    "snacs",
    needs_data=True,
    summary="adaptive connectivity scores of activations (Ganesh et al.)",
)
def snacs_ranking(context: RankingContext) -> Ranking:
    """SNACS's removal order, upper limits and protected-unit counts."""
    model, components, dataset = context.model, context.components, context.dataset
    options, progress = context.options, context.progress
    groups, samples_per_class, phi = options.groups, options.samples_per_class, options.phi
    estimator, upper_limit, rule = options.estimator, options.upper_limit, options.rule
    protect, seed = options.protect, options.seed
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
    return Ranking(order, limits, {name: int(mask.sum()) for name, mask in shielded.items()})


def _log(progress: bool, message: str, *args: Any) -> None:
    (log.info if progress else log.debug)(message, *args)
