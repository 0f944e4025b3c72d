"""Structured baselines: L1-norm filter pruning (Li et al., 2017) and random filter pruning.

Both remove the same fraction of every layer's units (Li et al. prune each layer by a
chosen ratio; one ratio for all layers here), the ratio being set so that the removed
parameters match the target exactly like SNACS's (:mod:`.selection`). Within a layer, L1
removes the units whose weights (kernel and inputs) have the smallest sum of absolute
values; random removes a seeded random choice. Each component is ranked by the largest
within-layer rank of its units, ``rank / units``, so walking the ranking removes the same
fraction of each layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from n2nonnx.model import Model
from n2nonnx.structured.orders import Ranking, RankingContext, structured_method
from n2nonnx.units.coupling import Component


def l1_norms(model: Model) -> dict[str, np.ndarray]:
    """Layer name -> sum of |w| of each unit's weights."""
    result = {}
    for layer in model.layers:
        weight = np.abs(np.asarray(model.effective_weight(layer), dtype=np.float64))
        moved = np.moveaxis(weight, layer.unit_axis, 0)
        if layer.op == "ConvTranspose" and layer.groups > 1:
            per_out = layer.units // layer.groups
            moved = moved.reshape(per_out, layer.groups, -1).transpose(1, 0, 2)
        result[layer.name] = moved.reshape(layer.units, -1).sum(axis=1)
    return result


def uniform_order(
    components: Sequence[Component], unit_scores: dict[str, np.ndarray]
) -> list[Component]:
    """Components by the largest ``within-layer rank / units`` of their units (lowest first)."""
    relative = {}
    for name, scores in unit_scores.items():
        ranks = np.empty(len(scores))
        ranks[np.argsort(scores, kind="stable")] = np.arange(len(scores))
        relative[name] = (ranks + 1) / len(scores)

    def key(component: Component) -> tuple[float, float]:
        values = [relative[name][unit] for name, unit in component.units]
        return max(values), sum(unit_scores[name][unit] for name, unit in component.units)

    return sorted((c for c in components if not c.fixed), key=key)


def l1_order(model: Model, components: Sequence[Component]) -> list[Component]:
    """Removal order of L1-norm filter pruning."""
    return uniform_order(components, l1_norms(model))


def random_order(model: Model, components: Sequence[Component], seed: int) -> list[Component]:
    """Removal order of random filter pruning (seeded)."""
    rng = np.random.default_rng(seed)
    return uniform_order(
        components, {layer.name: rng.random(layer.units) for layer in model.layers}
    )


@structured_method("l1", needs_data=False, summary="L1-norm filter pruning (Li et al. 2017)")
def _l1(context: RankingContext) -> Ranking:
    return Ranking(l1_order(context.model, context.components))


@structured_method(
    "random", needs_data=False, needs_trained=False, summary="random filter pruning (seeded)"
)
def _random(context: RankingContext) -> Ranking:
    return Ranking(random_order(context.model, context.components, context.options.seed))
