"""Structured pruning of a trained model: remove whole filters and neurons, in one shot.

    result = prune_structured(model, "snacs", data="mnist1d", prune_percent=50)
    result.model            # smaller weight tensors, runs in onnxruntime as it is
    result.removed          # layer name -> removed unit indices

Methods, a registry filled by decorator (:mod:`.orders`): ``snacs`` (Ganesh, Blanchard,
Corso & Sekeh, "Slimming Neural networks using Adaptive Connectivity Scores", :mod:`.snacs`):
connectivity scores from conditional mutual information of activations (:mod:`.scores`,
:mod:`.edge`), per-layer operating constraints (:mod:`.constraints`), sensitivity
protection (:mod:`.sensitivity`), one global cut; and the baselines ``l1`` (Li et al. 2017)
and ``random`` (:mod:`.baselines`). All three remove exactly as many parameters (to one
coupled group of units), through :func:`~n2nonnx.units.remove_units`;
coupled channels (residual adds, depthwise groups) are removed together or kept
(:mod:`n2nonnx.units.coupling`).

The prune level is a share of the model's parameters (``prune_percent`` removed, or
``target_params`` kept); the paper's quantile of connection scores becomes the shortest
prefix of the SNACS ranking that reaches it (:mod:`.selection`). :func:`prune_structured`
is in :mod:`.prune`, its options (:class:`StructuredOptions`, validated once) in
:mod:`.options`; names are imported on first use, so reading :mod:`.options` (the command
line's ``--help``) imports no numpy.
"""

from __future__ import annotations

from n2nonnx.lazy import lazy_exports

__all__ = [
    "FINETUNE_DEFAULTS",
    "METHODS",
    "StructuredOptions",
    "StructuredResult",
    "prune_structured",
    "prune_structured_with",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "FINETUNE_DEFAULTS": "n2nonnx.structured.options",
        "METHODS": "n2nonnx.structured.options",
        "StructuredOptions": "n2nonnx.structured.options",
        "StructuredResult": "n2nonnx.structured.prune",
        "prune_structured": "n2nonnx.structured.prune",
        "prune_structured_with": "n2nonnx.structured.prune",
    },
)
