"""EDGE and the other MI estimators against closed-form mutual information of Gaussians."""

from __future__ import annotations

import numpy as np
import pytest

from n2nonnx.structured.edge import edge_cmi, edge_mi
from n2nonnx.structured.estimators import make_estimator

SAMPLES = 2500


def gaussian_pair(rho: float, dims: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((SAMPLES, dims))
    return x, rho * x + np.sqrt(1 - rho**2) * rng.standard_normal((SAMPLES, dims))


@pytest.mark.parametrize("rho", [0.3, 0.5, 0.7, 0.9])
def test_edge_matches_closed_form_in_one_dimension(rho):
    x, y = gaussian_pair(rho, 1, seed=int(rho * 10))
    exact = -0.5 * np.log(1 - rho**2)
    assert abs(edge_mi(x, y, seed=1) - exact) <= 0.1  # the tolerance the module docstring states


@pytest.mark.parametrize("dims", [1, 4, 16])
def test_edge_is_about_zero_for_independent_variables(dims):
    x, _ = gaussian_pair(0.0, dims, seed=3)
    y = np.random.default_rng(4).standard_normal((SAMPLES, dims))
    assert edge_mi(x, y, seed=2) < 0.02
    # Without the re-paired correction sparse buckets of several dimensions look dependent.
    if dims == 4:
        assert edge_mi(x, y, seed=2, debias=False) > 0.1


def test_edge_grows_with_dependence_in_several_dimensions():
    values = [edge_mi(*gaussian_pair(rho, 4, seed=5), seed=0) for rho in (0.0, 0.3, 0.6, 0.9)]
    assert values == sorted(values) and values[-1] > values[0] + 0.3


def test_conditional_mi_sees_through_the_condition():
    rng = np.random.default_rng(7)
    z = rng.standard_normal((SAMPLES, 3))
    y = rng.standard_normal((SAMPLES, 2))
    x = (
        0.7 * y.sum(1, keepdims=True)
        + 0.5 * z.sum(1, keepdims=True)
        + 0.5 * rng.standard_normal((SAMPLES, 1))
    )
    # Y that only copies Z carries nothing given Z.
    copy = z[:, :2] + 0.01 * rng.standard_normal((SAMPLES, 2))
    assert edge_cmi(x, y, z) > 0.2
    assert edge_cmi(x, copy, z) < 0.5 * edge_cmi(x, y, z)
    assert edge_cmi(x, rng.standard_normal((SAMPLES, 2)), z) < 0.02


def test_edge_is_deterministic_per_seed():
    x, y = gaussian_pair(0.5, 4, seed=8)
    assert edge_mi(x, y, seed=3) == edge_mi(x, y, seed=3)


@pytest.mark.parametrize("name", ["knn", "binned"])
def test_alternative_estimators_order_dependence(name):
    estimator = make_estimator(name, SAMPLES, seed=0)
    low = estimator.cmi(*(estimator.encode(v) for v in gaussian_pair(0.1, 1, seed=9)), None)
    high = estimator.cmi(*(estimator.encode(v) for v in gaussian_pair(0.9, 1, seed=9)), None)
    assert high > low + 0.3
    if name == "knn":  # KSG is accurate in one dimension
        assert abs(high - (-0.5 * np.log(1 - 0.81))) < 0.08
