"""Pruning at initialization: score the weights, allocate a budget per layer, mask in the graph.

    pruned = n2nonnx.pruning.prune(model, "snip", density=0.05, data="mnist1d", allocation="global")

Methods (:data:`n2nonnx.pruning.registry.CRITERIA`): ``random`` (RP), ``expander`` (RP with
equal fan-in per unit), ``magnitude``, ``snip`` (CSP), ``grasp``, ``synflow``, plus
user-supplied masks (``masks=...npz``). The result carries a mask initializer per pruned
weight (see :mod:`n2nonnx.masks`) and a ``prune`` record in its metadata.

Modules: :mod:`.at_init` (:func:`prune` and the per-layer table), :mod:`.options`
(:class:`PruneOptions`, validated once), :mod:`.allocation` (the per-layer budget),
:mod:`.registry` and :mod:`.criteria` (the scoring functions). Names are imported on first
use, so reading :mod:`.options` (the command line's ``--help``) imports no numpy.
"""

from __future__ import annotations

from n2nonnx.lazy import lazy_exports

__all__ = [
    "ALLOCATIONS",
    "AT_INIT_METHODS",
    "CRITERIA",
    "LayerCount",
    "PruneOptions",
    "format_prune_table",
    "prune",
    "prune_table",
    "prune_with",
    "rescaled_weight",
    "select_layers",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "ALLOCATIONS": "n2nonnx.pruning.options",
        "AT_INIT_METHODS": "n2nonnx.pruning.options",
        "PruneOptions": "n2nonnx.pruning.options",
        "CRITERIA": "n2nonnx.pruning.criteria",
        "LayerCount": "n2nonnx.pruning.at_init",
        "format_prune_table": "n2nonnx.pruning.at_init",
        "prune": "n2nonnx.pruning.at_init",
        "prune_table": "n2nonnx.pruning.at_init",
        "prune_with": "n2nonnx.pruning.at_init",
        "rescaled_weight": "n2nonnx.pruning.at_init",
        "select_layers": "n2nonnx.pruning.at_init",
    },
)
