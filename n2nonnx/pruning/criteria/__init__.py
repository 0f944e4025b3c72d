"""The pruning criteria; importing this package registers them all."""

from n2nonnx.pruning.criteria import gradient, random, synflow, weights  # noqa: F401
