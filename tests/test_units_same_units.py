"""Unit rules of the same-units family (activations, elementwise math, pooling), against onnxruntime."""

from __future__ import annotations

import pytest
from onnx import helper
from unit_rules import Case, check_family, constant, unary


def _pad(t):
    pads = constant("pads", [0, 0, 1, 1, 0, 0, 1, 1])
    return [helper.make_node("Pad", [t, "pads"], ["o"], name="op")], "o", [pads]


CASES = [
    *[
        Case(op, unary(op))
        for op in [
            "Relu",
            "Sigmoid",
            "Tanh",
            "Abs",
            "Neg",
            "Identity",
            "Softplus",
            "Softsign",
            "Elu",
            "Selu",
            "Erf",
            "Exp",
            "Floor",
        ]
    ],
    Case("LeakyRelu", unary("LeakyRelu", alpha=0.1)),
    Case("Dropout", unary("Dropout")),
    Case("HardSigmoid", unary("HardSigmoid")),
    Case("Cast", unary("Cast", to=1)),
    Case("Relu", unary("Relu"), image=False),
    Case("MaxPool", unary("MaxPool", kernel_shape=[2, 2])),
    Case("AveragePool", unary("AveragePool", kernel_shape=[3, 3], pads=[1, 1, 1, 1])),
    Case("GlobalAveragePool", unary("GlobalAveragePool")),
    Case("GlobalMaxPool", unary("GlobalMaxPool")),
    Case("Pad", _pad),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_same_units_rules_match_onnxruntime(case):
    check_family(case, "same_units")
