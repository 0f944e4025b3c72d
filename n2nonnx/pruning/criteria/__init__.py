"""The pruning criteria; importing this package registers them all (see :mod:`n2nonnx.pruning.registry`)."""

from __future__ import annotations

from n2nonnx.pruning.criteria import gradient, random, synflow, weights  # noqa: F401
