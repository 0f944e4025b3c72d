"""Connectivity at scale: the dense reference kept as bicliques (implicit) against the explicit graph."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import scipy.linalg
import scipy.sparse as sp
import torch
from builders import reordered_blocks
from onnx import numpy_helper

import n2nonnx
from n2nonnx.connectivity import analyze, build_unit_graph, heat, krylov
from n2nonnx.connectivity.links import LayerConnections, LinkCollector
from n2nonnx.connectivity.plots import pixel_counts, plot_report
from n2nonnx.connectivity.unit_graph import IMPLICIT_MIN_EDGES, UnitGraph
from n2nonnx.errors import InvalidArgumentError
from n2nonnx.torch_export import to_onnx

torch.set_num_threads(1)


class _Bottleneck(torch.nn.Module):
    def __init__(self, channels: int, mid: int, out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(channels, mid, 1, bias=False)
        self.conv2 = torch.nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
        self.conv3 = torch.nn.Conv2d(mid, out, 1, bias=False)
        self.bn = torch.nn.BatchNorm2d(out)
        self.down = None
        if stride != 1 or channels != out:
            self.down = torch.nn.Conv2d(channels, out, 1, stride, bias=False)

    def forward(self, x):
        y = self.bn(self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x))))))
        return torch.relu(y + (x if self.down is None else self.down(x)))


def _vgg() -> torch.nn.Module:
    """Convs with pooling, then a flatten over 2x2 pixels (several inputs per channel)."""
    layers: list[torch.nn.Module] = []
    channels = 3
    for width in (16, 16, "M", 32, 32, "M", 48, "M"):
        if width == "M":
            layers.append(torch.nn.MaxPool2d(2))
            continue
        layers += [torch.nn.Conv2d(channels, int(width), 3, padding=1), torch.nn.ReLU()]
        channels = int(width)
    return torch.nn.Sequential(
        *layers,
        torch.nn.Flatten(),
        torch.nn.Linear(channels * 4, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 10),
    )


def _resnet() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1, bias=False),
        torch.nn.ReLU(),
        _Bottleneck(16, 16, 64, 1),
        _Bottleneck(64, 16, 64, 1),
        _Bottleneck(64, 32, 128, 2),
        _Bottleneck(128, 32, 128, 1),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(128, 100),
    )


def _dense(factory, size: int = 16) -> n2nonnx.Model:
    torch.manual_seed(0)
    proto = to_onnx(factory().eval(), (torch.randn(1, 3, size, size),), ["x"], ["y"])
    return n2nonnx.load(proto)


@pytest.fixture(scope="module")
def models():
    """Dense, randomly pruned (2%) and N2NSkip (2%) versions of a small VGG and ResNet."""
    result = {}
    for name, factory in (("vgg", _vgg), ("resnet", _resnet)):
        dense = _dense(factory)
        pruned = n2nonnx.prune(dense, "random", density=0.02, seed=0)
        result[name] = (dense, pruned, n2nonnx.add_n2nskip(pruned, seed=0))
    return result


def _same_graph(implicit: UnitGraph, explicit: UnitGraph) -> None:
    assert implicit.is_implicit and not explicit.is_implicit
    assert implicit.n_edges == explicit.n_edges
    np.testing.assert_array_equal(implicit.degrees(), explicit.degrees())
    assert implicit.dead_units() == explicit.dead_units()
    count, labels = heat.connected_components(implicit.connections)
    assert count == heat.connected_components(explicit.connections)[0]
    assert np.array_equal(labels, heat.connected_components(explicit.connections)[1])
    assert (implicit.flow != explicit.flow).nnz == 0  # last: materialises the implicit one


@pytest.mark.parametrize("name", ["vgg", "resnet"])
def test_implicit_reference_agrees_with_the_explicit_one(models, name):
    dense, pruned, skipped = models[name]
    implicit = build_unit_graph(dense)  # default: dense and large enough -> implicit
    explicit = build_unit_graph(dense, implicit=False)
    assert implicit.n_edges >= IMPLICIT_MIN_EDGES
    assert implicit.implicit.rest.nnz == 0 and implicit.implicit.n_bicliques < 60
    _same_graph(implicit, explicit)
    _same_graph(
        build_unit_graph(skipped, reference=True),
        build_unit_graph(skipped, reference=True, implicit=False),
    )
    times = np.geomspace(0.03, 300.0, 9) / implicit.degrees().mean()  # up to 10x the default
    fast = analyze(dense, pruned, skipped, times=times)
    slow = analyze(
        explicit,
        build_unit_graph(pruned, implicit=False),
        build_unit_graph(skipped, implicit=False),
        times=times,
    )
    assert next(iter(fast.graphs.values())).is_implicit
    for ours, theirs in zip(fast.models, slow.models, strict=True):
        assert np.all(theirs.delta > 0)
        np.testing.assert_allclose(ours.delta, theirs.delta, rtol=1e-6, atol=0)
        assert ours.saturation_delta == pytest.approx(theirs.saturation_delta, rel=1e-9, abs=1e-12)
        assert ours.dead_units == theirs.dead_units and ours.components == theirs.components
    # The reference's spectrum is complete from its unit classes: the dense eigh's.
    assert fast.reference.spectrum_complete
    everything = scipy.linalg.eigh(heat.laplacian(explicit.adjacency).toarray(), eigvals_only=True)
    values, complete = heat.laplacian_spectrum(implicit.connections)
    assert complete and values.size == implicit.n_nodes
    np.testing.assert_allclose(values, everything, atol=1e-8 * everything.max())
    assert fast.reference.spectral_gap == pytest.approx(everything[1], rel=1e-8)


def test_analyze_and_plot_never_expand_the_reference(models, tmp_path):
    dense, pruned, skipped = models["resnet"]
    report = analyze(dense, pruned, skipped)
    reference = next(iter(report.graphs.values()))
    assert reference.is_implicit and reference._flow is None
    plot_report(report, tmp_path / "figure.png")
    assert reference._flow is None and (tmp_path / "figure.png").stat().st_size > 10_000
    assert not report.graphs[report.models[0].name].is_implicit  # pruned: explicit


def test_pixel_counts_from_bicliques_equal_the_edge_histogram(models):
    dense = models["vgg"][0]
    implicit, explicit = build_unit_graph(dense), build_unit_graph(dense, implicit=False)
    for bins in (7, 100):
        counts = pixel_counts(implicit, bins)
        np.testing.assert_array_equal(counts, pixel_counts(explicit, bins))
        assert counts.sum() == 2 * explicit.n_edges


def test_nearly_dense_layers_stay_bicliques_with_their_odd_edges(models):
    dense = models["vgg"][0]
    proto = onnx.ModelProto.FromString(dense.proto.SerializeToString())
    weights = {i.name: i for i in proto.graph.initializer}
    layers = sorted(dense.layers, key=lambda layer: layer.index)
    changes = {
        layers[1].weight: lambda w: w.__setitem__((3, 5), 0.0),  # one conv channel pair
        layers[-3].weight: lambda w: w.__setitem__(
            (7, 100), 0.0
        ),  # one input of a flattened channel
        layers[-2].weight: lambda w: w.__setitem__((9, slice(None)), 0.0),  # a unit fed by nothing
    }
    for name, change in changes.items():
        array = numpy_helper.to_array(weights[name]).copy()
        change(array)
        weights[name].CopyFrom(numpy_helper.from_array(array, name))
    model = n2nonnx.load(proto)
    implicit, explicit = build_unit_graph(model), build_unit_graph(model, implicit=False)
    assert implicit.is_implicit and 0 < implicit.implicit.rest.nnz < 2000
    _same_graph(implicit, explicit)
    assert implicit.dead_units()[layers[-2].name] == 1
    sources = heat.heat_sources(implicit.n_nodes, implicit.input_nodes)
    times = np.geomspace(1e-4, 1e-1, 5)
    np.testing.assert_allclose(
        heat.heat_state(implicit.connections, sources, times),
        heat.heat_state(explicit.connections, sources, times),
        rtol=0,
        atol=1e-11,
    )


def _block(name: str, start: int, size: int):
    return SimpleNamespace(name=name, start=start, size=size)


def _gemm(units: int, in_units: int):
    from n2nonnx.graph import Layer

    return Layer(
        name="gemm", op="Gemm", index=0, weight="w", bias=None,
        weight_shape=(units, in_units), unit_axis=0, in_axis=1, units=units,
        in_units=in_units, groups=1, fan_in=in_units, input="x", preact="z", output="z",
        chain=(), in_feature_axis=1, out_feature_axis=1, spatial_in=(), spatial_out=(),
    )  # fmt: skip


def _check_links(links: LinkCollector, edges: int, bicliques: int) -> None:
    flow, explicit = links.implicit_flow(), links.explicit_flow()
    assert (flow.to_csr() != explicit).nnz == 0
    assert flow.n_edges == explicit.nnz == edges and flow.n_bicliques == bicliques
    x = np.random.default_rng(0).standard_normal(explicit.shape[0])
    np.testing.assert_allclose(flow.adjacency_matvec(x), (explicit + explicit.T) @ x, atol=1e-12)


def test_links_between_the_same_blocks_are_counted_once():
    a, b, c = _block("a", 0, 3), _block("b", 3, 4), _block("c", 7, 2)
    from n2nonnx.graph import Edge

    identity = Edge("a", "b", (), np.arange(3))
    into_b, into_c = _gemm(4, 3), _gemm(2, 3)
    one_missing = np.array([[True, True, True], [True, True, False]])  # a2 -> c1 missing
    inside = np.zeros((4, 3), dtype=bool)
    inside[1, 2] = True
    links = LinkCollector(9, weighted=False)
    links.add(LayerConnections(into_b, None), identity, a, b)  # a x b
    links.add(LayerConnections(into_b, None), Edge("a", "b", (), np.array([0, 0, -1])), a, b)
    links.add(LayerConnections(into_b, inside), identity, a, b)  # an edge a x b holds already
    links.add(LayerConnections(into_c, one_missing), identity, a, c)  # {a0, a1} x c + a2 -> c0
    links.add(LayerConnections(into_c, None), Edge("a", "b", (), np.array([1, -1, -1])), a, c)
    links.add(LayerConnections(into_c, None), Edge("a", "b", (), None), b, c)  # b x c
    _check_links(links, edges=12 + 5 + 8, bicliques=3)
    # Bicliques a -> c whose receivers overlap without being equal: that pair goes explicit.
    links = LinkCollector(9, weighted=False)
    links.add(LayerConnections(into_c, one_missing), identity, a, c)
    only_c0 = np.array([[True, True, True], [False, False, False]])
    links.add(LayerConnections(into_c, only_c0), Edge("a", "b", (), None), a, c)  # a x c0
    _check_links(links, edges=5, bicliques=0)


def _two_clusters(n: int, seed: int) -> sp.csr_array:
    """Two random clusters of n/2 nodes joined by one edge: a small lambda_2, a large lambda_max."""
    rng = np.random.default_rng(seed)
    half = n // 2
    upper = sp.triu(sp.random_array((half, half), density=0.3, rng=rng, format="csr"), k=1)
    cluster = sp.csr_array(upper + upper.T)
    bridge = sp.csr_array(([1.0, 1.0], ([0, half], [half, 0])), shape=(n, n))
    return sp.csr_array(sp.block_diag([cluster, cluster], format="csr") + bridge)


def test_lanczos_matches_expm_at_times_far_beyond_the_largest_eigenvalue():
    lap = heat.laplacian(_two_clusters(200, seed=1))
    everything, vectors = scipy.linalg.eigh(lap.toarray())
    vector = np.zeros(200)
    vector[:3] = 1.0  # heat in one cluster: its share in the other rises like 1 - exp(-t lambda_2)
    times = np.array([0.0, 0.2, 5.0, 1.0 / everything[1], 10.0 / everything[1]])
    assert times[-1] * everything[-1] > 1e4  # exp(-t T_m) underflows long before convergence
    expected = np.stack([vectors @ (np.exp(-t * everything) * (vectors.T @ vector)) for t in times])
    bound = 2 * float(np.max(lap.diagonal()))
    for dimension in (krylov.MAX_DIMENSION, 24):  # 24 vectors: long increments are split
        found = krylov.expm_action(lambda x: lap @ x, vector, times, bound, max_dimension=dimension)
        np.testing.assert_allclose(found, expected, rtol=0, atol=1e-10)
    assert not krylov.expm_action(lambda x: lap @ x, np.zeros(200), times, bound).any()
    assert krylov.plan(0.0, 1e-12, 120) == (1, 1)
    pieces, dimension = krylov.plan(1e4, 1e-12, 120)
    assert pieces > 1 and dimension <= 120


def test_heat_of_a_dense_reference_is_exact_at_any_time(models):
    graph = build_unit_graph(models["vgg"][0])
    explicit = heat.laplacian(graph.adjacency).toarray()
    everything, vectors = scipy.linalg.eigh(explicit)
    # The graph is connected and L @ 1 == 0 exactly, so its smallest eigenvalue is exactly 0;
    # eigh returns it as round-off of size n * eps * ||L|| (about 2e-13 here, depending on the
    # LAPACK build), which at t = 1e9 would decay the constant mode by exp(-2e-4) and move the
    # reference (not the quotient's exact S) away from |inputs| / |C| by 1e-6. Such values are 0.
    assert heat.connected_components(graph.connections)[0] == 1
    assert not np.any(explicit @ np.ones(graph.n_nodes))
    noise = graph.n_nodes * np.finfo(np.float64).eps * np.abs(everything).max()
    everything = np.where(np.abs(everything) < noise, 0.0, everything)
    sources = heat.heat_sources(graph.n_nodes, graph.input_nodes)
    times = np.array([1e-4, 0.01, 1.0, 1e3, 1e9])
    expected = np.stack(
        [vectors @ (np.exp(-t * np.maximum(everything, 0)) * (vectors.T @ sources)) for t in times]
    )
    found = heat.heat_state(graph.connections, sources, times)
    np.testing.assert_allclose(found, expected, rtol=0, atol=1e-11)
    np.testing.assert_allclose(
        found[-1], heat.saturation_state(graph.connections, sources), atol=1e-12
    )


def test_small_dense_models_stay_explicit_and_bad_requests_are_refused():
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    model = n2nonnx.load(to_onnx(mlp.eval(), (torch.randn(1, 8),), ["x"], ["y"]))
    assert not build_unit_graph(model).is_implicit
    forced = build_unit_graph(model, implicit=True)
    assert forced.is_implicit and forced.n_edges == 8 * 16 + 16 * 4
    with pytest.raises(InvalidArgumentError, match="binary"):
        build_unit_graph(model, weighted=True, implicit=True)
    with pytest.raises(InvalidArgumentError, match="exactly one"):
        UnitGraph(blocks=forced.blocks)


def test_aligned_to_reorders_an_implicit_graph(models):
    dense = models["resnet"][0]
    graph = build_unit_graph(dense)
    order = list(range(len(graph.blocks)))
    order[3], order[4] = order[4], order[3]
    blocks, permutation, inverse = reordered_blocks(graph, order)
    shuffled = UnitGraph(
        blocks=blocks,
        output_nodes=np.sort(inverse[graph.output_nodes]),
        implicit=graph.implicit.permuted(permutation),
    )
    aligned = shuffled.aligned_to(graph)
    assert aligned is not None and aligned.is_implicit and aligned.same_nodes(graph)
    assert (aligned.flow != graph.flow).nnz == 0
