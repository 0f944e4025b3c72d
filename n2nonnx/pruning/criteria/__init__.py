"""The pruning criteria; importing this package registers them all.

Use the registry through this package (``from n2nonnx.pruning.criteria import
get_criterion``): the registry module (:mod:`n2nonnx.pruning.registry`) imports none of
its entries, and importing this package is what fills it.
"""

from __future__ import annotations

from n2nonnx.pruning.criteria import gradient, random, synflow, weights  # noqa: F401
from n2nonnx.pruning.registry import CRITERIA, ScoringContext, criterion, get_criterion

__all__ = ["CRITERIA", "ScoringContext", "criterion", "get_criterion"]
