"""The registry of pruning criteria: one scoring function per method, added by decorator.

A criterion turns a model into one score array per prunable weight (same shape as the
weight); *higher scores are kept*. Allocation (:mod:`n2nonnx.pruning.allocation`) then
decides how many weights each layer keeps. A criterion that prunes iteratively
(SynFlow) may also return final masks itself.

This module imports none of the criteria: importing :mod:`n2nonnx.pruning` imports
:mod:`n2nonnx.pruning.criteria`, whose modules register themselves here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from n2nonnx.errors import InvalidArgumentError
from n2nonnx.model import Model
from n2nonnx.registry import name_registry


@dataclass
class ScoringContext:
    """Everything a criterion may use.

    Attributes:
        model: the model to score (masks already in it are respected).
        weights: names of the weights to score (excluded layers are not in it).
        density: the target overall density.
        rng: the seeded generator for any random choice.
        data: a resolved data set (``.x_train``, ``.y_train`` tensors) or None.
        batch_size: mini-batch size for data-driven criteria.
        options: criterion-specific options (``temperature``, ``iterations`` ...).
        allocate: the allocation function, for criteria that prune iteratively.
        progress: show progress bars over long loops (rounds, passes, batches) on a terminal.
    """

    model: Model
    weights: list[str]
    density: float
    rng: np.random.Generator
    data: Any = None
    batch_size: int = 128
    options: dict[str, Any] = field(default_factory=dict)
    allocate: Callable[[dict[str, np.ndarray], float], dict[str, np.ndarray]] | None = None
    progress: bool = False


ScoreFunction = Callable[[ScoringContext], dict[str, np.ndarray]]


@dataclass(frozen=True)
class Criterion:
    """A registered criterion: its scoring function and whether it needs data."""

    name: str
    score: ScoreFunction
    needs_data: bool
    summary: str


CRITERIA: dict[str, Criterion] = {}
_add = name_registry(CRITERIA, "pruning criterion")


def criterion(
    name: str, *, needs_data: bool, summary: str
) -> Callable[[ScoreFunction], ScoreFunction]:
    """Register a scoring function under ``name`` (a name registered twice is refused).

    Args:
        name: the method name users give (``--method NAME``).
        needs_data: whether the criterion scores on data.
        summary: one line for listings.

    Returns:
        A decorator that records the function and returns it unchanged.
    """

    def register(function: ScoreFunction) -> ScoreFunction:
        _add(name)(Criterion(name, function, needs_data, summary))
        return function

    return register


def get_criterion(name: str) -> Criterion:
    """The criterion called ``name`` (case-insensitive; ``csp`` is SNIP, ``rp`` random)."""
    key = {"csp": "snip", "rp": "random"}.get(name.lower(), name.lower())
    if key not in CRITERIA:
        raise InvalidArgumentError(
            f"unknown pruning method {name!r}; choose from {', '.join(sorted(CRITERIA))}"
        )
    return CRITERIA[key]
