"""What each ONNX op does to units: one rule per op, one file per op family.

``RULES`` maps an op type to its :class:`UnitRule` (its data inputs, how it maps units,
whether it mixes them, how a unit is removed through it, how a scale passes); the
families are :mod:`.same_units` (activations, elementwise math, pooling),
:mod:`.per_channel` (BatchNorm, InstanceNorm), :mod:`.joins` (element-wise arithmetic,
Concat), :mod:`.layout` (Transpose, Reshape and kin), :mod:`.select` (Gather, Slice,
Split), :mod:`.normalizations` (reductions, LayerNorm, Softmax), :mod:`.mixing`
(attention products, Einsum) and :mod:`.metadata` (Shape and kin). Importing this
package registers them all.
"""

from __future__ import annotations

from n2nonnx.graph.units import (  # noqa: F401  (each module registers its rules)
    joins,
    layout,
    metadata,
    mixing,
    normalizations,
    per_channel,
    same_units,
    select,
)
from n2nonnx.graph.units.table import (
    ALL,
    PRODUCT,
    RULES,
    Layout,
    Padding,
    PadEditor,
    Trace,
    UnitEditor,
    UnitRule,
    rule_for,
    unknown_trace,
)

__all__ = [
    "ALL",
    "PRODUCT",
    "RULES",
    "Layout",
    "PadEditor",
    "Padding",
    "Trace",
    "UnitEditor",
    "UnitRule",
    "rule_for",
    "unknown_trace",
]
