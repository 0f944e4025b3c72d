"""Unit rules of the layout family (Transpose, Reshape and kin), against onnxruntime."""

from __future__ import annotations

import pytest
from onnx import helper
from unit_rules import UNITS, Case, check_family, constant, unary


def _reshape(shape):
    def make(t):
        return (
            [helper.make_node("Reshape", [t, "shape"], ["o"], name="op")],
            "o",
            [constant("shape", shape)],
        )

    return make


def _pooled(op: str, **attributes):
    def make(t):
        nodes = [
            helper.make_node("GlobalAveragePool", [t], ["p"], name="gap"),
            helper.make_node(
                op, ["p", *(["axes"] if op in ("Squeeze",) else [])], ["o"], name="op", **attributes
            ),
        ]
        extra = [constant("axes", [2, 3])] if op == "Squeeze" else []
        return nodes, "o", extra

    return make


def _unsqueeze(t):
    return (
        [helper.make_node("Unsqueeze", [t, "axes"], ["o"], name="op")],
        "o",
        [constant("axes", [1])],
    )


CASES = [
    Case("Transpose", unary("Transpose", perm=[0, 2, 3, 1])),
    Case("Transpose", unary("Transpose", perm=[0, 2, 1]), image=False),
    Case("Flatten", _pooled("Flatten")),
    Case("Squeeze", _pooled("Squeeze")),
    Case("Unsqueeze", _unsqueeze, image=False),
    Case("Reshape", _reshape([0, 2, 2, UNITS]), image=False),
    Case("Reshape", _reshape([0, UNITS, 25])),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_layout_rules_match_onnxruntime(case):
    check_family(case, "layout")
