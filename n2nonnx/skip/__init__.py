"""N2NSkip: sparse, learnable neuron-to-neuron skip connections between non-consecutive layers.

:func:`add_n2nskip` turns a (pruned) model into an N2NSkip model of the same density
(Subramaniam & Sharma, BMVC 2020): part of the non-zero budget moves from the sequential
layers to skip branches ``Gather -> sparse Conv / MatMul -> activation -> Add`` into later layers'
pre-activations. :mod:`~n2nonnx.skip.add` holds it, :mod:`~n2nonnx.skip.options` its
options (:class:`SkipOptions`, validated once), :mod:`~n2nonnx.skip.candidates` finds and
aligns the pairs, :mod:`~n2nonnx.skip.budget` splits the budget,
:mod:`~n2nonnx.skip.sampling` samples each pair's connections at random,
:mod:`~n2nonnx.skip.placement` places them where the unit graph is broken
(``placement="connectivity"``), :mod:`~n2nonnx.skip.build` writes the subgraphs.

The authors' code variant, as options of :func:`add_n2nskip`: ``pairs="blocks"`` (a
block's input to the next block's first conv), ``sampling="channel"`` (whole kernels,
expander-style), ``skip_norm="batchnorm"`` and ``pool_at="output"`` (sparse conv,
BatchNorm, ReLU, max-pool), see :data:`AUTHORS_VARIANT`.

Names are imported on first use, so reading :mod:`~n2nonnx.skip.options` (the command
line's ``--help``) imports no numpy.
"""

from __future__ import annotations

from n2nonnx.lazy import lazy_exports

__all__ = [
    "AUTHORS_VARIANT",
    "PLACEMENTS",
    "SAMPLING_MODES",
    "SkipOptions",
    "add_n2nskip",
    "add_n2nskip_with",
    "check_options",
    "find_pairs",
    "sequential_density",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "AUTHORS_VARIANT": "n2nonnx.skip.options",
        "PLACEMENTS": "n2nonnx.skip.options",
        "SAMPLING_MODES": "n2nonnx.skip.options",
        "SkipOptions": "n2nonnx.skip.options",
        "check_options": "n2nonnx.skip.options",
        "add_n2nskip": "n2nonnx.skip.add",
        "add_n2nskip_with": "n2nonnx.skip.add",
        "sequential_density": "n2nonnx.skip.add",
        "find_pairs": "n2nonnx.skip.candidates",
    },
)
