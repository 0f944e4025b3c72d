"""Op families the graph view reasons about, named once.

What each op does to units is its rule in :mod:`n2nonnx.graph.units`.
"""

from __future__ import annotations

#: Unary activations (and pass-throughs) that act on each unit separately.
ACTIVATIONS = frozenset(
    {
        "Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu",
        "Selu", "Celu", "Softplus", "Softsign", "Gelu", "Mish", "ThresholdedRelu", "Dropout",
        "Identity",
    }
)  # fmt: skip

#: Elementwise math that keeps every unit where it is.
ELEMENTWISE_MATH = frozenset(
    {"Cast", "Neg", "Abs", "Exp", "Log", "Sqrt", "Erf", "Reciprocal", "Floor", "Ceil", "Round"}
)

#: Pooling and resampling: spatial sizes change, units do not.
SPATIAL = frozenset(
    {
        "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool",
        "Pad", "Resize", "Upsample",
    }
)  # fmt: skip

#: Per-unit normalisations with learned per-unit parameters.
UNIT_NORMS = frozenset({"BatchNormalization", "InstanceNormalization"})

#: Reductions (the unit axis survives only when it is not reduced).
REDUCTIONS = frozenset(
    {
        "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
        "ReduceLogSumExp", "ReduceSumSquare",
    }
)  # fmt: skip
