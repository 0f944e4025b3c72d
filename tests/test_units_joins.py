"""Unit rules of the joins family (element-wise arithmetic, Concat), against onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from unit_rules import UNITS, Case, check_family, constant


def _with_constant(op: str, image: bool = True):
    def make(t):
        shape = (1, UNITS, 1, 1) if image else (UNITS,)
        value = np.random.default_rng(3).uniform(0.5, 2, shape).astype(np.float32)
        return [helper.make_node(op, [t, "k"], ["o"], name="op")], "o", [constant("k", value)]

    return make


def _self(op: str):
    return lambda t: ([helper.make_node(op, [t, t], ["o"], name="op")], "o", [])


def _concat(axis: int):
    def make(t):
        nodes = [
            helper.make_node("Relu", [t], ["r"], name="relu"),
            helper.make_node("Concat", [t, "r"], ["o"], name="op", axis=axis),
        ]
        return nodes, "o", []

    return make


CASES = [
    *[Case(op, _with_constant(op)) for op in ["Add", "Sub", "Mul", "Div", "Max", "Min"]],
    Case("Add", _with_constant("Add", image=False), image=False),
    Case("Mul", _with_constant("Mul", image=False), image=False),
    Case("Sum", _self("Sum")),
    Case("Mean", _self("Mean")),
    Case("Concat", _concat(1)),
    Case("Concat", _concat(-1), image=False),
    Case("Concat", _concat(2)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_join_rules_match_onnxruntime(case):
    check_family(case, "joins")
