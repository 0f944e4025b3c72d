"""Unit rules of reductions and normalisations: over other axes they pass units, over the units' they mix."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from unit_rules import UNITS, Case, check_family, constant, unary


def _layer_norm(t):
    rng = np.random.default_rng(4)
    params = [constant(n, rng.standard_normal(UNITS).astype(np.float32)) for n in ("g", "b")]
    return (
        [helper.make_node("LayerNormalization", [t, "g", "b"], ["o"], name="op", axis=-1)],
        "o",
        params,
    )


def _reduce(axes, keepdims=1):
    def make(t):
        node = helper.make_node("ReduceMean", [t, "axes"], ["o"], name="op", keepdims=keepdims)
        return [node], "o", [constant("axes", axes)]

    return make


def _decomposed_layer_norm(t):
    """(x - mean(x)) / sqrt(var(x) + eps) over the units, as some exporters write it."""
    nodes = [
        helper.make_node("ReduceMean", [t, "axes"], ["mean"], name="op"),
        helper.make_node("Sub", [t, "mean"], ["centred"], name="centre"),
        helper.make_node("Mul", ["centred", "centred"], ["square"], name="square"),
        helper.make_node("ReduceMean", ["square", "axes"], ["var"], name="variance"),
        helper.make_node("Add", ["var", "eps"], ["var_eps"], name="eps_add"),
        helper.make_node("Sqrt", ["var_eps"], ["std"], name="sqrt"),
        helper.make_node("Div", ["centred", "std"], ["o"], name="scale"),
    ]
    return nodes, "o", [constant("axes", [-1]), constant("eps", np.float32(1e-5))]


CASES = [
    Case("ReduceMean", _reduce([2, 3])),
    Case("ReduceMean", _reduce([1], keepdims=0), image=False),
    Case("ReduceMean", _reduce([1]), mixes=True),
    Case("Softmax", unary("Softmax", axis=1), image=False),
    Case("Softmax", unary("Softmax", axis=-1), image=False, mixes=True),
    Case("LayerNormalization", _layer_norm, image=False, mixes=True),
    Case("ReduceMean", _decomposed_layer_norm, image=False, mixes=True),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_normalization_rules_match_onnxruntime(case):
    check_family(case, "normalizations")
