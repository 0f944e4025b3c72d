"""Heat diffusion math (the N2NSkip paper's section 3.2, eqs. 3-7) against scipy.linalg.expm and by hand."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse as sp

from n2nonnx.connectivity import heat
from n2nonnx.errors import InvalidArgumentError


def _random_graph(n: int, degree: float, seed: int, weighted: bool = False) -> sp.csr_array:
    rng = np.random.default_rng(seed)
    upper = sp.random_array((n, n), density=degree / n, rng=rng, format="csr")
    upper = sp.triu(upper, k=1)
    if not weighted:
        upper.data[:] = 1.0
    return sp.csr_array(upper + upper.T)


def _expm_state(adjacency, sources, time):
    lap = heat.laplacian(adjacency).toarray()
    return scipy.linalg.expm(-time * lap) @ sources


def _relative_error(found, expected):
    return np.linalg.norm(found - expected) / np.linalg.norm(expected)


def test_two_node_path_closed_form():
    weight = 0.7
    adjacency = sp.csr_array(np.array([[0.0, weight], [weight, 0.0]]))
    times = np.array([0.0, 0.3, 1.0, 4.0])
    states = heat.heat_state(adjacency, np.array([1.0, 0.0]), times)
    decay = np.exp(-2 * weight * times)
    np.testing.assert_allclose(states[:, 0], (1 + decay) / 2, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(states[:, 1], (1 - decay) / 2, rtol=1e-12, atol=1e-14)


def test_three_node_path_laplacian_by_hand():
    adjacency = sp.csr_array(np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=float))
    np.testing.assert_array_equal(
        heat.laplacian(adjacency).toarray(), [[1, -1, 0], [-1, 2, -1], [0, -1, 1]]
    )
    eigenvalues, complete = heat.laplacian_spectrum(adjacency)
    assert complete
    np.testing.assert_allclose(eigenvalues, [0, 1, 3], atol=1e-12)
    assert heat.spectral_gap(eigenvalues) == pytest.approx(1.0)


def test_state_matches_expm_on_2000_nodes():
    adjacency = _random_graph(2000, 4.0, seed=1, weighted=True)
    sources = heat.heat_sources(2000, range(50))
    state = heat.heat_state(adjacency, sources, [1.5])[0]
    assert _relative_error(state, _expm_state(adjacency, sources, 1.5)) <= 1e-6


def test_state_matches_expm_at_many_times():
    adjacency = _random_graph(250, 6.0, seed=9, weighted=True)
    sources = heat.heat_sources(250, range(20))
    times = np.geomspace(1e-3, 30.0, 6)
    states = heat.heat_state(adjacency, sources, times)
    for row, time in zip(states, times, strict=True):
        assert _relative_error(row, _expm_state(adjacency, sources, time)) <= 1e-6


def test_delta_matches_expm_and_time_order_is_kept():
    reference = _random_graph(300, 8.0, seed=2)
    pruned = sp.csr_array(sp.triu(reference, k=1))
    pruned.data[np.random.default_rng(3).random(pruned.nnz) < 0.6] = 0.0
    pruned.eliminate_zeros()
    pruned = sp.csr_array(pruned + pruned.T)
    sources = heat.heat_sources(300, range(10))
    times = np.array([3.0, 0.1, 0.0])  # unsorted on purpose
    delta = heat.heat_delta(
        heat.heat_state(reference, sources, times), heat.heat_state(pruned, sources, times)
    )
    expected = [
        np.linalg.norm(_expm_state(reference, sources, t) - _expm_state(pruned, sources, t))
        for t in times
    ]
    np.testing.assert_allclose(delta, expected, rtol=1e-6, atol=1e-12)
    assert delta[2] == 0.0


def test_evenly_spaced_times_one_call_equals_chained_steps():
    adjacency = _random_graph(400, 5.0, seed=4)
    sources = heat.heat_sources(400, range(5))
    even = np.linspace(0.0, 2.0, 9)
    one_call = heat.heat_state(adjacency, sources, even)
    chained = heat.heat_state(adjacency, sources, even[1:])
    np.testing.assert_allclose(one_call[1:], chained, rtol=1e-9, atol=1e-12)


def test_saturation_matches_very_large_time():
    adjacency = sp.block_diag((_random_graph(60, 5.0, seed=5), _random_graph(40, 5.0, seed=6)))
    sources = heat.heat_sources(100, [0, 1, 2, 70])
    count, labels = heat.connected_components(adjacency)
    saturation = heat.saturation_state(adjacency, sources)
    late = heat.heat_state(adjacency, sources, [400.0])[0]
    np.testing.assert_allclose(saturation, late, atol=1e-9)
    values, _ = heat.laplacian_spectrum(adjacency)
    assert np.sum(values < 1e-9) == count  # one zero eigenvalue per component
    assert count >= 2
    assert heat.saturation_state(adjacency, sources).sum() == pytest.approx(4.0)


def test_cut_off_part_gets_the_component_prediction():
    # Layered network 2 inputs -> 4 -> 4 -> 2; in the pruned one, hidden units 4,5 and
    # output 12 lose every link to the rest: component {inputs + 7 nodes} and a cut-off part.
    layers = [np.arange(0, 2), np.arange(2, 6), np.arange(6, 10), np.arange(10, 12)]
    dense = np.zeros((12, 12))
    for left, right in zip(layers, layers[1:], strict=False):
        dense[np.ix_(left, right)] = 1
    dense = dense + dense.T
    pruned = dense.copy()
    cut = [4, 5, 9, 11]
    kept = [0, 1, 2, 3, 6, 7, 8, 10]
    pruned[np.ix_(cut, kept)] = pruned[np.ix_(kept, cut)] = 0
    sources = heat.heat_sources(12, layers[0])
    found = heat.saturation_state(sp.csr_array(pruned), sources)
    expected = np.zeros(12)
    expected[kept] = 2 / 8  # 2 inputs in a component of 8 nodes; the cut-off part stays cold
    np.testing.assert_allclose(found, expected)
    reference = heat.saturation_state(sp.csr_array(dense), sources)
    np.testing.assert_allclose(reference, np.full(12, 2 / 12))
    delta = heat.heat_delta(reference, found)
    assert delta == pytest.approx(np.sqrt(8 * (2 / 8 - 2 / 12) ** 2 + 4 * (2 / 12) ** 2))
    assert heat.connected_components(sp.csr_array(pruned))[0] == 2


def test_scree_on_complete_graph_and_properties():
    n = 6
    complete = sp.csr_array(np.ones((n, n)) - np.eye(n))
    eigenvalues, _ = heat.laplacian_spectrum(complete)
    np.testing.assert_allclose(eigenvalues, [0] + [n] * (n - 1), atol=1e-12)
    alpha = heat.scree(eigenvalues, [0.1, 10.0])
    np.testing.assert_allclose(alpha, np.tile(np.arange(1, n) / (n - 1), (2, 1)))
    path_values, _ = heat.laplacian_spectrum(_random_graph(50, 3.0, seed=7))
    alpha = heat.scree(path_values, [0.0, 1.0, 1e6])  # 1e6: no underflow to nan
    assert np.all(np.isfinite(alpha)) and np.allclose(alpha[:, -1], 1.0)
    assert np.all(np.diff(alpha, axis=1) >= -1e-15)
    np.testing.assert_allclose(alpha[0], np.arange(1, 50) / 49)  # t = 0: flat


def test_sparse_spectrum_matches_dense_smallest():
    adjacency = _random_graph(600, 6.0, seed=8)
    adjacency = sp.csr_array(
        adjacency
        + sp.diags_array(np.ones(599), offsets=1)
        + sp.diags_array(np.ones(599), offsets=-1)
    )  # connected
    dense, _ = heat.laplacian_spectrum(adjacency)
    sparse, complete = heat.laplacian_spectrum(adjacency, k=10, dense_limit=100)
    assert not complete and sparse.size == 10
    np.testing.assert_allclose(sparse, dense[:10], atol=1e-6)


def test_bad_arguments_raise():
    adjacency = sp.csr_array(np.ones((2, 2)))
    with pytest.raises(InvalidArgumentError):
        heat.heat_state(adjacency, np.ones(2), [-1.0])
    with pytest.raises(InvalidArgumentError):
        heat.heat_state(adjacency, np.ones(3), [1.0])
    with pytest.raises(InvalidArgumentError):
        heat.heat_delta(np.ones(2), np.ones(3))
