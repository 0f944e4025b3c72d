"""Adaptive conditional mutual information (ACMI) connectivity scores of SNACS.

For a parent layer ``l`` and each layer ``c`` that reads it (its children), both split
into ``groups`` contiguous groups of units (the authors' grouping; a layer with fewer
units than groups has one unit per group), the connection of child group ``C_j`` to parent
group ``P_g`` scores::

    rho(j, g) = phi(w(j, g)) * I(C_j ; P_g | P_1 .. P_{g-1}, P_{g+1} .. P_G)

with the activations of the sample, ``w(j, g)`` the mean weight between the two groups
(weights min-max normalised over the network, kernel-averaged) and ``phi`` one of
:data:`PHI`. A parent unit's score is the largest score of its group's connections to any
child group of any child layer: under one global threshold on connection scores, a parent
group loses *all* its outgoing connections -- and so can be removed as a whole -- exactly
when this maximum is below the threshold. This is how the connection scores of the paper
become a ranking of filters and neurons.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from n2nonnx.errors import InvalidArgumentError
from n2nonnx.graph.layers import Layer
from n2nonnx.model import Model
from n2nonnx.structured.weights import unit_matrix
from n2nonnx.units.coupling import consumer_columns

PHI: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "w": lambda w: w,
    "w2": lambda w: w**2,
    "exp": lambda w: np.exp(-(w**2) / 2.0),
}


def contiguous_groups(units: int, groups: int) -> list[np.ndarray]:
    """``min(groups, units)`` contiguous, nearly equal groups of unit indices."""
    return [g for g in np.array_split(np.arange(units), min(max(groups, 1), units)) if len(g)]


def connection_scores(
    model: Model,
    parent: Layer,
    child: Layer,
    activations: Mapping[str, np.ndarray],
    estimator,
    *,
    groups: int = 8,
    phi: str = "w",
    value_range: tuple[float, float],
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The ``(child groups, parent groups)`` ACMI matrix of one parent-child pair.

    Args:
        model: the model.
        parent: the layer whose units are scored.
        child: a layer that reads ``parent``.
        activations: layer name -> ``(samples, units)`` activations.
        estimator: an estimator from :func:`~n2nonnx.structured.estimators.make_estimator`.
        groups: groups per layer.
        phi: weight scaling, a key of :data:`PHI`.
        value_range: the network's weight range.

    Returns:
        The score matrix and the parent groups (unit indices) its columns stand for.
    """
    if phi not in PHI:
        raise InvalidArgumentError(f"unknown phi {phi!r}; choose from {', '.join(PHI)}")
    parent_groups = contiguous_groups(parent.units, groups)
    child_groups = contiguous_groups(child.units, groups)
    parent_values, child_values = activations[parent.name], activations[child.name]
    columns = consumer_columns(child, parent.name)
    matrix = unit_matrix(model, child, value_range)
    encoded_children = [estimator.encode(child_values[:, g]) for g in child_groups]
    encoded_parents = [estimator.encode(parent_values[:, g]) for g in parent_groups]
    encoded_rest = [
        estimator.encode(np.delete(parent_values, g, axis=1)) if len(parent_groups) > 1 else None
        for g in parent_groups
    ]
    scores = np.zeros((len(child_groups), len(parent_groups)))
    for j, child_group in enumerate(child_groups):
        for g, parent_group in enumerate(parent_groups):
            cols = np.concatenate(
                [columns.get(int(u), np.zeros(0, np.int64)) for u in parent_group]
            )
            block = matrix[np.ix_(child_group, cols)] if len(cols) else np.full((1, 1), np.nan)
            mean_weight = float(np.nanmean(block)) if np.isfinite(block).any() else 0.0
            information = estimator.cmi(encoded_children[j], encoded_parents[g], encoded_rest[g])
            scores[j, g] = float(PHI[phi](np.asarray(mean_weight))) * information
    return scores, parent_groups


def unit_scores(
    model: Model,
    parents: list[Layer],
    activations: Mapping[str, np.ndarray],
    estimator,
    *,
    groups: int = 8,
    phi: str = "w",
    value_range: tuple[float, float],
) -> dict[str, np.ndarray]:
    """Layer name -> SNACS score of each unit (see the module docstring).

    A unit no child layer reads scores 0 (it is removed first).
    """
    layers = {layer.name: layer for layer in model.layers}
    result = {}
    for parent in parents:
        best = np.zeros(parent.units)
        children = sorted(
            {e.target for e in parent.feeds if e.target in layers},
            key=lambda name: layers[name].index,
        )
        for name in children:
            scores, parent_groups = connection_scores(
                model,
                parent,
                layers[name],
                activations,
                estimator,
                groups=groups,
                phi=phi,
                value_range=value_range,
            )
            for g, members in enumerate(parent_groups):
                best[members] = np.maximum(best[members], scores[:, g].max())
        result[parent.name] = best
    return result
