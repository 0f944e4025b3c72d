"""Unit rules of the mixing family (products of activations) and metadata ops, against onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from unit_rules import Case, check_family, constant

import n2nonnx


def _attention_values(t):
    """softmax(x x^T) x: the values' units stay on the last axis, mixed with the scores'."""
    nodes = [
        helper.make_node("Transpose", [t], ["xt"], name="transpose", perm=[0, 2, 1]),
        helper.make_node("MatMul", [t, "xt"], ["scores"], name="scores"),
        helper.make_node("Softmax", ["scores"], ["weights"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["weights", t], ["o"], name="op"),
    ]
    return nodes, "o", []


CASES = [Case("MatMul", _attention_values, image=False, mixes=True)]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_mixing_rules_match_onnxruntime(case):
    check_family(case, "mixing")


def test_units_whose_count_a_shape_reads_are_kept_with_the_reason():
    from unit_rules import _build

    def shape_reader(t):
        nodes = [
            helper.make_node("Shape", [t], ["shape"], name="shape_of"),
            helper.make_node("Reshape", [t, "shape"], ["o"], name="op"),
        ]
        return nodes, "o", []

    proto = _build(Case("Shape", shape_reader, image=False), np.random.default_rng(0))
    layer = n2nonnx.load(proto).layer("L")
    assert layer.removal_blocker is not None and "Shape 'shape_of'" in layer.removal_blocker
    assert constant  # the helper module is shared
