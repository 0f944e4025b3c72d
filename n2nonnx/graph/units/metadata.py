"""Ops that read a tensor's shape, not its values: Shape, Size and the ops built on shapes.

Their outputs carry no units, so tracing stops there; but a removal changes the shape
they read, so no unit can be removed from a tensor they read (unless the chain only
carries a size that the rewrite updates, which no rule does yet).
"""

from __future__ import annotations

from n2nonnx.graph.units.table import register

NON_DATA_OPS = frozenset({"Shape", "Size", "ConstantOfShape", "NonZero", "Range", "EyeLike"})

register(NON_DATA_OPS, None, family="metadata")
