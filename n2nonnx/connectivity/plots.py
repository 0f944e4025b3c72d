"""Figures of a connectivity report: adjacency matrices, delta(t) curves, scree curves.

Matplotlib with the Agg backend (no display needed); the file extension picks the format
(``.png``, ``.svg``, anything matplotlib writes). The adjacency panels follow the paper's
figure 3: units ordered input -> output, lines between layers, one dot per connection
(above SPY_LIMIT units, a density image whose shade is each pixel's fraction of
connected unit pairs, on a log scale, counted block by block for an implicit graph so that
a dense network's millions of edges are never listed).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from n2nonnx.connectivity.report import ConnectivityReport  # noqa: E402
from n2nonnx.connectivity.unit_graph import UnitGraph  # noqa: E402
from n2nonnx.errors import InvalidArgumentError  # noqa: E402

SPY_LIMIT = 2500
"""Explicit graphs up to this many nodes are drawn dot by dot; larger ones and implicit
graphs (a dense network's, drawn from its bicliques) as a density image."""

DENSITY_PIXELS = 600


def _draw_adjacency(axis, graph: UnitGraph, title: str) -> None:
    n = graph.n_nodes
    if n <= SPY_LIMIT and not graph.is_implicit:
        coo = sp.coo_array(graph.adjacency)
        size = max(0.3, min(3.0, 300.0 / max(n, 1)))
        axis.plot(coo.col, coo.row, "s", color="black", markersize=size, markeredgewidth=0)
    else:
        bins = min(DENSITY_PIXELS, n)
        cell = (n / bins) ** 2  # unit pairs per pixel: the shade is the pixel's fill fraction
        fraction = np.ma.masked_equal(pixel_counts(graph, bins) / cell, 0.0)
        axis.imshow(
            fraction,
            cmap="Greys",
            extent=(0, n, n, 0),
            interpolation="nearest",
            norm=LogNorm(vmin=min(0.1, 0.1 / cell), vmax=1.0),
        )
    alpha = 0.6 if len(graph.blocks) <= 12 else 0.25
    for block in graph.blocks[1:]:
        axis.axhline(block.start - 0.5, color="tab:red", linewidth=0.4, alpha=alpha)
        axis.axvline(block.start - 0.5, color="tab:red", linewidth=0.4, alpha=alpha)
    axis.set_xlim(-0.5, n - 0.5)
    axis.set_ylim(n - 0.5, -0.5)
    axis.set_aspect("equal")
    axis.set_title(f"{title}\n{n} units, {graph.n_edges} edges", fontsize=9)
    axis.set_xlabel("unit (input \u2192 output)", fontsize=8)
    axis.tick_params(labelsize=7)


def pixel_counts(graph: UnitGraph, bins: int) -> np.ndarray:
    """Edges of the undirected graph per pixel, units binned evenly into ``bins`` per axis.

    An implicit graph is counted from its bicliques, never expanded (a dense VGG19's
    25 million edges cost a (units x bicliques) product).

    Args:
        graph: the unit graph.
        bins: pixels per axis.

    Returns:
        (bins, bins) symmetric array of edge counts (row: unit, column: unit).
    """
    n = graph.n_nodes
    pixel = np.minimum((np.arange(n) * bins) // max(n, 1), bins - 1)
    if graph.implicit is not None:
        directed = graph.implicit.pixel_counts(pixel, bins)
    else:
        coo = sp.coo_array(graph.flow)
        codes = pixel[coo.row] * bins + pixel[coo.col]
        directed = np.bincount(codes, minlength=bins * bins).reshape(bins, bins).astype(float)
    return directed + directed.T


def plot_adjacency(graphs: dict[str, UnitGraph], axes=None):
    """Adjacency matrices side by side (reference, pruned, N2NSkip ...).

    Args:
        graphs: title -> unit graph, in panel order.
        axes: matplotlib axes to draw into (one per graph); new figure if None.

    Returns:
        The matplotlib figure.
    """
    if axes is None:
        figure, axes = plt.subplots(1, len(graphs), figsize=(4.2 * len(graphs), 4.6), squeeze=False)
        axes = axes[0]
    for axis, (title, graph) in zip(axes, graphs.items(), strict=True):
        _draw_adjacency(axis, graph, title)
    axes[0].set_ylabel("unit", fontsize=8)
    return axes[0].figure


def plot_delta(report: ConnectivityReport, axis=None):
    """delta(t) per model (log-log), with each model's saturation delta dashed.

    Args:
        report: from :func:`n2nonnx.connectivity.analyze`.
        axis: axes to draw into; new figure if None.

    Returns:
        The matplotlib figure.
    """
    if axis is None:
        _, axis = plt.subplots(figsize=(5.5, 4))
    for i, model in enumerate(report.models):
        color = f"C{i}"
        delta = np.where(model.delta > 0, model.delta, np.nan)
        axis.plot(report.times, delta, "o-", color=color, markersize=3, label=model.name)
        if model.saturation_delta > 0:
            axis.axhline(
                model.saturation_delta,
                color=color,
                linestyle="--",
                linewidth=1,
                label=f"{model.name} (t\u2192\u221e)",
            )
    axis.set_xscale("log")
    if np.any([np.nanmax(np.r_[m.delta, m.saturation_delta, 0]) > 0 for m in report.models]):
        axis.set_yscale("log")
    axis.set_xlabel("t")
    axis.set_ylabel("\u03b4(t) = \u2016S_ref(t) \u2212 S(t)\u2016\u2082")
    axis.set_title(f"heat diffusion vs {report.reference.name}", fontsize=10)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=7)
    return axis.figure


def plot_scree(report: ConnectivityReport, axis=None, time_index: int | None = None):
    """Scree alpha(beta, t) against beta for the reference and every model, at one t.

    Args:
        report: from :func:`analyze` (computed with ``spectrum=True``).
        axis: axes to draw into; new figure if None.
        time_index: which of the report's times (default: the last one).

    Returns:
        The matplotlib figure.
    """
    if axis is None:
        _, axis = plt.subplots(figsize=(5.5, 4))
    index = len(report.times) - 1 if time_index is None else time_index
    for i, model in enumerate([report.reference, *report.models]):
        if model.scree is None or model.scree.shape[1] == 0:
            continue
        betas = np.arange(1, model.scree.shape[1] + 1)
        style = "k-" if i == 0 else f"C{i - 1}-"
        label = model.name + ("" if model.spectrum_complete else " (smallest eigenvalues)")
        axis.plot(betas, model.scree[index], style, marker=".", markersize=3, label=label)
    axis.set_xscale("log")
    axis.set_ylim(0, 1.02)
    axis.set_xlabel("\u03b2 (eigenvalues kept)")
    axis.set_ylabel("\u03b1(\u03b2, t)")
    axis.set_title(f"scree at t = {report.times[index]:.3g}", fontsize=10)
    axis.grid(True, alpha=0.3)
    if axis.get_lines():
        axis.legend(fontsize=7)
    else:
        axis.text(0.5, 0.5, "spectrum not computed", ha="center", transform=axis.transAxes)
    return axis.figure


def plot_report(report: ConnectivityReport, path: str | Path, caption: str | None = None) -> Path:
    """One figure: adjacency panels on top, delta(t) and scree below; saved to ``path``.

    Args:
        report: from :func:`analyze`.
        path: output file; its extension picks the format (.png, .svg, .pdf ...).
        caption: text under the panels (what the axes mean), wrapped to the figure.

    Returns:
        The path written.

    Raises:
        InvalidArgumentError: the extension is not a format matplotlib writes.
    """
    path = Path(path)
    figure = plt.figure(figsize=(max(9.0, 4.2 * len(report.graphs)), 9.5))
    try:
        top = figure.add_gridspec(2, 1, height_ratios=(1.1, 1.0), hspace=0.35)
        panels = top[0].subgridspec(1, len(report.graphs))
        columns = range(len(report.graphs))
        plot_adjacency(report.graphs, [figure.add_subplot(panels[0, c]) for c in columns])
        bottom = top[1].subgridspec(1, 2, wspace=0.3)
        plot_delta(report, figure.add_subplot(bottom[0]))
        plot_scree(report, figure.add_subplot(bottom[1]))
        if caption:
            import textwrap

            width = int(figure.get_figwidth() * 11)
            figure.text(0.5, 0.005, textwrap.fill(caption, width), ha="center", va="bottom")
            figure.subplots_adjust(bottom=0.13)
        save(figure, path)
    finally:
        plt.close(figure)
    return path


def save(figure, path: str | Path) -> Path:
    """Save a figure with the format given by the extension.

    Args:
        figure: matplotlib figure.
        path: output file.

    Returns:
        The path written.

    Raises:
        InvalidArgumentError: unknown extension.
    """
    path = Path(path)
    formats = figure.canvas.get_supported_filetypes()
    extension = path.suffix.lower().lstrip(".")
    if extension not in formats:
        raise InvalidArgumentError(
            f"cannot write a figure as {path.name!r}: use one of "
            + ", ".join("." + f for f in sorted(formats))
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=150, bbox_inches="tight")
    return path
