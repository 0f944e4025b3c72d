"""The pruning criteria; importing this package registers them all."""

from n2nonnx.prune.criteria import gradient, random, synflow, weights  # noqa: F401
