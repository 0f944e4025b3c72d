"""n2nonnx: prune ONNX models, add N2NSkip connections, train them, measure connectivity, deploy.

The public verbs, each a function from a model to a new model (or a report)::

    model = n2nonnx.load("dense.onnx")
    pruned = n2nonnx.prune(model, "snip", density=0.05, data="mnist1d")  # or scl, snacs ...
    skipped = n2nonnx.add_n2nskip(pruned, skip_share=0.2)
    trained = n2nonnx.train(skipped, "mnist1d", epochs=20).model
    report = n2nonnx.analyze(model, trained)          # heat-diffusion connectivity
    deployed = n2nonnx.deploy(trained).model          # masks folded, dead units removed
    n2nonnx.save(deployed, "deployed.onnx")

The verbs are imported lazily, so ``import n2nonnx`` (and the ``n2nonnx`` command's
``--help``) start quickly.

Layering, bottom-up (each layer imports only from the layers below it; import-linter
checks this in CI, see ``pyproject.toml``):

1. ``errors``, ``tags``, ``metadata``, ``patterns``, ``registry``, ``paths``, ``lazy``,
   ``fields``: no other n2nonnx import but ``errors``.
2. ``graph``: the normalised graph, the mask representation, the layer view and the op
   rules for units (``graph.units``: what each op does to units, one file per family).
3. ``model``, ``io``, ``runtime``, ``masks``, ``data``, ``zoo``, ``summary``, ``torch_export``:
   the model object, files,
   onnxruntime sessions, data sets and built-in architectures.
4. ``units``: the units core (reachability, coupled and consistent removal, the removal
   transform), on the op rules of ``graph.units``.
5. ``backend``: the ONNX-to-PyTorch executor.
6. ``connectivity``: the unit graph and heat diffusion, which the stages above use to
   steer sparsity (repair, skip placement).
7. The stages, none importing another: ``pruning``, ``skip``, ``training``,
   ``deployment``; ``scl`` and ``structured`` build on them.
8. ``pipeline``, ``study``: the main job and the study, built from the stages.
9. ``cli``: the ``n2nonnx`` command.
"""

from __future__ import annotations

from n2nonnx.lazy import lazy_exports

__version__ = "0.2.0"

__all__ = [
    "Model",
    "N2NError",
    "PruneResult",
    "TrainConfig",
    "__version__",
    "add_n2nskip",
    "analyze",
    "deploy",
    "load",
    "prune",
    "prune_model",
    "resolve_data",
    "save",
    "train",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "load": "n2nonnx.io",
        "save": "n2nonnx.io",
        "Model": "n2nonnx.model",
        "N2NError": "n2nonnx.errors",
        "prune": "n2nonnx.pipeline.methods",
        "prune_model": "n2nonnx.pipeline.methods",
        "PruneResult": "n2nonnx.pipeline.methods",
        "add_n2nskip": "n2nonnx.skip",
        "train": "n2nonnx.training",
        "TrainConfig": "n2nonnx.training",
        "analyze": "n2nonnx.connectivity",
        "deploy": "n2nonnx.deployment",
        "resolve_data": "n2nonnx.data",
    },
)
