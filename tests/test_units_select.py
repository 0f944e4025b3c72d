"""Unit rules of the select family (Gather, Slice, Split), against onnxruntime."""

from __future__ import annotations

import pytest
from onnx import helper
from unit_rules import Case, check_family, constant


def _gather(t):
    node = helper.make_node("Gather", [t, "idx"], ["o"], name="op", axis=1)
    return [node], "o", [constant("idx", [4, 0, 2, 2])]


def _slice(axis: int):
    def make(t):
        node = helper.make_node("Slice", [t, "st", "en", "ax"], ["o"], name="op")
        return [node], "o", [constant("st", [1]), constant("en", [5]), constant("ax", [axis])]

    return make


def _split(t):
    nodes = [
        helper.make_node("Split", [t, "sizes"], ["a", "b"], name="op", axis=1),
        helper.make_node("Concat", ["b", "a"], ["o"], name="join", axis=1),
    ]
    return nodes, "o", [constant("sizes", [2, 4])]


CASES = [
    Case("Gather", _gather),
    Case("Slice", _slice(1)),
    Case("Slice", _slice(2)),
    Case("Slice", _slice(-1), image=False),
    Case("Split", _split),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_select_rules_match_onnxruntime(case):
    check_family(case, "select")
