"""Unit rules of the per-channel family (BatchNorm, InstanceNorm), against onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from unit_rules import UNITS, Case, check_family, constant


def _batch_norm(t):
    rng = np.random.default_rng(1)
    params = [
        constant(name, value.astype(np.float32))
        for name, value in (
            ("s", rng.standard_normal(UNITS)),
            ("b", rng.standard_normal(UNITS)),
            ("m", rng.standard_normal(UNITS)),
            ("v", rng.uniform(0.5, 2, UNITS)),
        )
    ]
    node = helper.make_node("BatchNormalization", [t, "s", "b", "m", "v"], ["o"], name="op")
    return [node], "o", params


def _instance_norm(t):
    rng = np.random.default_rng(2)
    params = [constant(n, rng.standard_normal(UNITS).astype(np.float32)) for n in ("s", "b")]
    return [helper.make_node("InstanceNormalization", [t, "s", "b"], ["o"], name="op")], "o", params


CASES = [Case("BatchNormalization", _batch_norm), Case("InstanceNormalization", _instance_norm)]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_per_channel_rules_match_onnxruntime(case):
    check_family(case, "per_channel")
