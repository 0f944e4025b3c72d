"""Training, a stage: the model's own ONNX graph trained with PyTorch, values written back.

The backend (:mod:`n2nonnx.backend`) executes ONNX graphs; this package trains them:
:func:`train` with a :class:`TrainConfig` recipe (optimizers and schedules in
:mod:`~n2nonnx.training.optim`, losses in :mod:`~n2nonnx.training.losses`), recorded per
epoch in a :class:`History`; a hook may follow every step (:class:`StepInfo`).
"""

from n2nonnx.lazy import lazy_exports

# Exports are imported on first use: the CLI reads training.config without importing torch.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "TrainConfig": "n2nonnx.training.config",
        "EpochRecord": "n2nonnx.training.history",
        "History": "n2nonnx.training.history",
        "StepInfo": "n2nonnx.training.hooks",
        "TrainResult": "n2nonnx.training.loop",
        "evaluate": "n2nonnx.training.loop",
        "train": "n2nonnx.training.loop",
        "LOSSES": "n2nonnx.training.losses",
        "output_kind": "n2nonnx.training.losses",
        "OPTIMIZERS": "n2nonnx.training.optim",
        "SCHEDULES": "n2nonnx.training.optim",
    },
)

__all__ = [
    "LOSSES",
    "OPTIMIZERS",
    "SCHEDULES",
    "EpochRecord",
    "History",
    "StepInfo",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "output_kind",
    "train",
]
