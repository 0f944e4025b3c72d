"""Connectivity of a (pruned, N2NSkip) network by heat diffusion on its unit graph.

``analyze(reference, *models)`` builds the unit graphs, computes delta(t), the exact
saturation delta, components, dead units, spectral gap and scree; ``plots`` draws them.
"""

from __future__ import annotations

from n2nonnx.connectivity.heat import (
    heat_delta,
    heat_sources,
    heat_state,
    laplacian,
    laplacian_spectrum,
    saturation_state,
    scree,
    spectral_gap,
)
from n2nonnx.connectivity.implicit import ImplicitFlow
from n2nonnx.connectivity.repair import (
    RepairRecord,
    dead_weights,
    repair_dead_weights,
    repair_model,
)
from n2nonnx.connectivity.report import (
    ConnectivityReport,
    ModelConnectivity,
    analyze,
    default_times,
)
from n2nonnx.connectivity.unit_graph import Block, UnitGraph, build_unit_graph

__all__ = [
    "Block",
    "ConnectivityReport",
    "ImplicitFlow",
    "ModelConnectivity",
    "RepairRecord",
    "UnitGraph",
    "analyze",
    "build_unit_graph",
    "dead_weights",
    "default_times",
    "heat_delta",
    "heat_sources",
    "heat_state",
    "laplacian",
    "laplacian_spectrum",
    "repair_dead_weights",
    "repair_model",
    "saturation_state",
    "scree",
    "spectral_gap",
]
