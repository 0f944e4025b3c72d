"""The main job and every pruning method behind one call, built from the stages.

- :mod:`~n2nonnx.pipeline.methods`: :func:`prune_model` (and ``n2nonnx.prune``): any
  method the command line offers, at initialization, learned or structured, one
  :class:`PruneResult`.
- :mod:`~n2nonnx.pipeline.job`: one job, :func:`sparsify` (prune -> N2NSkip -> train ->
  check -> connectivity), the unit of the main job and of each study cell.
- :mod:`~n2nonnx.pipeline.run`: :func:`run_job`, the main job with its baselines, deployed
  comparison (:mod:`~n2nonnx.pipeline.gains`), verdict and choice of the deployed model by
  validation accuracy (:mod:`~n2nonnx.pipeline.verdict`), that model on every deployment target
  (:mod:`~n2nonnx.pipeline.targets`) and report folder (:mod:`~n2nonnx.pipeline.report`).

Names are imported on first use.
"""

from __future__ import annotations

from n2nonnx.lazy import lazy_exports

__all__ = [
    "RECIPE_DEFAULTS",
    "JobConfig",
    "JobFiles",
    "JobResult",
    "PruneResult",
    "density_figures",
    "json_default",
    "prune_model",
    "run_job",
    "sparsify",
    "validate",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "RECIPE_DEFAULTS": "n2nonnx.pipeline.job",
        "JobConfig": "n2nonnx.pipeline.job",
        "JobResult": "n2nonnx.pipeline.job",
        "density_figures": "n2nonnx.pipeline.job",
        "sparsify": "n2nonnx.pipeline.job",
        "validate": "n2nonnx.pipeline.job",
        "json_default": "n2nonnx.pipeline.report",
        "JobFiles": "n2nonnx.pipeline.run",
        "run_job": "n2nonnx.pipeline.run",
        "PruneResult": "n2nonnx.pipeline.methods",
        "prune_model": "n2nonnx.pipeline.methods",
    },
)
