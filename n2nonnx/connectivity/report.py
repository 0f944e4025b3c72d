"""analyze(): heat-diffusion connectivity of models against a reference, as a report.

For every model: delta(t) = ||S_ref(t) - S_model(t)||_2 at the requested times, delta at
saturation (exact, from connected components), the number of components, dead units per
layer, the spectral gap lambda_2 and the scree alpha(beta, t) (the N2NSkip paper, Subramaniam & Sharma 2020, section 3.2).

A dense reference of some size (a dense model, or ``reference=None``) has its unit graph
kept implicit (:class:`~n2nonnx.connectivity.implicit.ImplicitFlow`, chosen by
:func:`~n2nonnx.connectivity.build_unit_graph`): a dense VGG19's 25 million edges are
never listed, and all of the above costs O(units) per operator product.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from n2nonnx.connectivity import heat
from n2nonnx.connectivity.unit_graph import UnitGraph, build_unit_graph
from n2nonnx.errors import InvalidArgumentError

DEFAULT_TIME_RANGE = (0.03, 30.0)
"""Default times, in units of 1 / (mean degree of the reference graph)."""

DEFAULT_TIME_COUNT = 20
SCREE_BETAS = 100
"""The report keeps alpha(beta, t) and the eigenvalues for beta up to this value."""


def default_times(reference: UnitGraph, count: int = DEFAULT_TIME_COUNT) -> np.ndarray:
    """Log-spaced times from 0.03 to 30 divided by the reference's mean (weighted) degree.

    The Laplacian is unnormalised, so diffusion speed scales with the degree; dividing by
    the mean degree makes the default range mean the same thing on any network (the paper
    gives no t). The work of expm_multiply grows with ``max(times) * ||L||_1``; the upper
    end 30 keeps a ResNet-50-scale graph under a minute (examples/benchmark_connectivity.py),
    and t -> infinity is covered exactly by the saturation delta. Pass explicit times
    for absolute values.

    Args:
        reference: the reference unit graph.
        count: number of time points.

    Returns:
        Ascending times.
    """
    degree = float(reference.degrees().sum()) / max(reference.n_nodes, 1)
    scale = 1.0 / degree if degree > 0 else 1.0
    low, high = DEFAULT_TIME_RANGE
    return np.geomspace(low, high, count) * scale


@dataclass
class ModelConnectivity:
    """Connectivity figures of one graph against the reference.

    Attributes:
        name: model name.
        nodes / edges: size of the unit graph.
        delta: delta(t) at the report's times.
        saturation_delta: delta at t -> infinity (exact).
        components: number of connected components.
        dead_units: layer -> units with no path from the inputs or none to the outputs.
        spectral_gap: lambda_2 (None when the spectrum was not computed).
        eigenvalues: smallest Laplacian eigenvalues (at most SCREE_BETAS + 1).
        spectrum_complete: True when all eigenvalues entered the scree (dense eigh).
        scree: alpha(beta, t), (len(times), betas) for beta = 1 .. betas.
    """

    name: str
    nodes: int
    edges: int
    delta: np.ndarray
    saturation_delta: float
    components: int
    dead_units: dict[str, int]
    spectral_gap: float | None = None
    eigenvalues: np.ndarray | None = None
    spectrum_complete: bool = False
    scree: np.ndarray | None = None

    @property
    def total_dead(self) -> int:
        """Dead units summed over the layers."""
        return int(sum(self.dead_units.values()))

    def to_dict(self) -> dict:
        """JSON-able figures."""
        return {
            "name": self.name,
            "nodes": self.nodes,
            "edges": self.edges,
            "delta": self.delta.tolist(),
            "saturation_delta": self.saturation_delta,
            "components": self.components,
            "dead_units": self.dead_units,
            "dead_units_total": self.total_dead,
            "spectral_gap": self.spectral_gap,
            "eigenvalues": None if self.eigenvalues is None else self.eigenvalues.tolist(),
            "spectrum_complete": self.spectrum_complete,
            "scree": None if self.scree is None else self.scree.tolist(),
        }


@dataclass
class ConnectivityReport:
    """Result of :func:`analyze`: the reference's figures and every model's.

    Attributes:
        times: diffusion times.
        weighted: edge weights sum |w| (else binary).
        reference: the reference's own figures (its delta is 0).
        models: one entry per model, in the order given.
        graphs: name -> unit graph (for plots; not in :meth:`to_dict`).
    """

    times: np.ndarray
    weighted: bool
    reference: ModelConnectivity
    models: list[ModelConnectivity]
    graphs: dict[str, UnitGraph] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        """JSON-able report (times, reference, models)."""
        return {
            "times": self.times.tolist(),
            "weighted": self.weighted,
            "reference": self.reference.to_dict(),
            "models": [m.to_dict() for m in self.models],
        }

    def table(self) -> str:
        """A readable text table: one row per graph, then delta(t) per model."""
        rows = [self.reference, *self.models]
        width = max(12, *(len(r.name) for r in rows)) + 2
        header = (
            f"{'graph':<{width}}{'nodes':>8}{'edges':>11}{'comp':>6}{'dead':>7}"
            f"{'lambda_2':>11}{'delta(inf)':>12}"
        )
        lines = [header, "-" * len(header)]
        for r in rows:
            gap = "-" if r.spectral_gap is None else f"{r.spectral_gap:.3g}"
            lines.append(
                f"{r.name:<{width}}{r.nodes:>8}{r.edges:>11}{r.components:>6}"
                f"{r.total_dead:>7}{gap:>11}{r.saturation_delta:>12.4g}"
            )
        lines += ["", "delta(t) = ||S_ref(t) - S(t)||_2 against " + self.reference.name]
        columns = [max(12, len(m.name) + 2) for m in self.models]
        lines.append(
            f"{'t':>11}"
            + "".join(f"{m.name:>{c}}" for m, c in zip(self.models, columns, strict=True))
        )
        for i, time in enumerate(self.times):
            lines.append(
                f"{time:>11.4g}"
                + "".join(
                    f"{m.delta[i]:>{c}.4g}" for m, c in zip(self.models, columns, strict=True)
                )
            )
        return "\n".join(lines)


def _name_of(source, position: int) -> str:
    path = getattr(source, "source", None) if not isinstance(source, (str, Path)) else source
    return Path(path).stem if path else f"model{position}"


def _unique(names: list[str]) -> list[str]:
    """Names made unique with a #2, #3 ... suffix (they key the report's graphs)."""
    seen: dict[str, int] = {}
    result = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        result.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return result


def _graph_of(source, weighted: bool, reference: bool = False) -> UnitGraph:
    if isinstance(source, UnitGraph):
        return source
    return build_unit_graph(source, weighted=weighted, reference=reference)


def _figures(name, graph, times, reference_states, reference_saturation, spectrum, eigen_k):
    sources = heat.heat_sources(graph.n_nodes, graph.input_nodes)
    adjacency = graph.connections  # an implicit graph stays implicit (never expanded)
    states = heat.heat_state(adjacency, sources, times)
    saturation = heat.saturation_state(adjacency, sources)
    if reference_states is None:
        reference_states, reference_saturation = states, saturation
    components, _ = heat.connected_components(adjacency)
    figures = ModelConnectivity(
        name=name,
        nodes=graph.n_nodes,
        edges=graph.n_edges,
        delta=np.atleast_1d(heat.heat_delta(reference_states, states)),
        saturation_delta=float(heat.heat_delta(reference_saturation, saturation)),
        components=components,
        dead_units=graph.dead_units(),
    )
    if spectrum and graph.n_nodes >= 2:
        eigenvalues, complete = heat.laplacian_spectrum(adjacency, k=eigen_k)
        figures.spectral_gap = heat.spectral_gap(eigenvalues)
        figures.spectrum_complete = complete
        figures.eigenvalues = eigenvalues[: SCREE_BETAS + 1]
        figures.scree = heat.scree(eigenvalues, times)[:, :SCREE_BETAS]
    return figures, states, saturation


def analyze(
    reference,
    *models,
    times: Sequence[float] | None = None,
    weighted: bool = False,
    spectrum: bool = True,
    eigenvalues: int = heat.SPARSE_EIGENVALUES,
    names: Sequence[str] | None = None,
) -> ConnectivityReport:
    """Heat-diffusion connectivity of ``models`` against ``reference``.

    Args:
        reference: path, ``onnx.ModelProto``, loaded model or :class:`UnitGraph`; None
            means the dense version of the first model (masks and N2NSkip layers removed).
            A dense one is kept implicit (never expanded into its edges) automatically.
        *models: the models to compare (same kinds as ``reference``), at least one.
        times: diffusion times (default :func:`default_times` of the reference).
        weighted: edge weights sum |w| over the kernel instead of 1.
        spectrum: compute eigenvalues (spectral gap, scree); dense eigh up to
            ``heat.DENSE_LIMIT`` nodes, else the smallest ``eigenvalues`` with eigsh.
        eigenvalues: how many smallest eigenvalues eigsh computes on large graphs.
        names: display names of the models (default: file stems, else model1, model2 ...).

    Returns:
        The :class:`ConnectivityReport`.

    Raises:
        InvalidArgumentError: no model, bad times, or a model whose units differ from
            the reference's.
    """
    if not models:
        raise InvalidArgumentError("analyze needs at least one model besides the reference")
    if names is not None and len(names) != len(models):
        raise InvalidArgumentError(f"got {len(names)} names for {len(models)} models")
    graphs = [_graph_of(model, weighted) for model in models]
    if reference is None and isinstance(models[0], UnitGraph):
        raise InvalidArgumentError(
            "a UnitGraph has no dense version to compare with: pass a reference graph"
        )
    if reference is None:
        reference_graph = _graph_of(models[0], weighted, reference=True)
        reference_name = "dense reference"
    else:
        reference_graph = _graph_of(reference, weighted)
        reference_name = _name_of(reference, 0).replace("model0", "reference")
    model_names = (
        list(names)
        if names is not None
        else [_name_of(model, i + 1) for i, model in enumerate(models)]
    )
    reference_name, *model_names = _unique([reference_name, *model_names])
    for position, (name, graph) in enumerate(zip(model_names, graphs, strict=True)):
        aligned = graph.aligned_to(reference_graph)
        if aligned is not None:
            graphs[position] = aligned
            continue
        missing = sorted(
            f"{b.weight or b.name} ({b.size} units)"
            for b in reference_graph.blocks
            if (b.weight or b.name, b.size)
            not in {(c.weight or c.name, c.size) for c in graph.blocks}
        )
        raise InvalidArgumentError(
            f"model {name!r} ({graph.n_nodes} units in {len(graph.blocks)} blocks) does not "
            f"have the reference's layers ({reference_graph.n_nodes} units in "
            f"{len(reference_graph.blocks)} blocks; e.g. missing or resized: {missing[:3]}): "
            "compare models of the same architecture"
        )
    time_points = default_times(reference_graph) if times is None else heat._as_times(times)
    reference_figures, states, saturation = _figures(
        reference_name, reference_graph, time_points, None, None, spectrum, eigenvalues
    )
    results = [
        _figures(name, graph, time_points, states, saturation, spectrum, eigenvalues)[0]
        for name, graph in zip(model_names, graphs, strict=True)
    ]
    return ConnectivityReport(
        times=time_points,
        weighted=weighted,
        reference=reference_figures,
        models=results,
        graphs={reference_name: reference_graph, **dict(zip(model_names, graphs, strict=True))},
    )
