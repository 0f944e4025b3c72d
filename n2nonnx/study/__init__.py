"""The paper's comparison at CPU scale, and the experiments built on it, resumable.

Every cell (architecture x variant with its options x density x seed) is one
:func:`n2nonnx.pipeline.sparsify` run with the same recipe; its numbers go to
``cells/<arch>/<cell>.json`` as soon as it finishes, so an interrupted study resumes where
it stopped. :mod:`~n2nonnx.study.grid` defines the grid (variants, the options a study can
vary, widths), :mod:`~n2nonnx.study.run` runs the missing cells and
:mod:`~n2nonnx.study.summary` turns the cells into ``results.md`` (mean +- std),
``results.json`` and figures.
"""

from __future__ import annotations

from n2nonnx.lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(
        (
            "ARCHS",
            "DEFAULT_VARIANTS",
            "FACTORS",
            "STUDY_RECIPE",
            "VARIANTS",
            "Cell",
            "StudyPlan",
            "cell_path",
        ),
        "n2nonnx.study.grid",
    ),
    "run_study": "n2nonnx.study.run",
    "load_cells": "n2nonnx.study.summary",
    "summarize": "n2nonnx.study.summary",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
