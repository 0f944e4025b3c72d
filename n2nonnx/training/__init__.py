"""Training, a stage: the model's own ONNX graph trained with PyTorch, values written back.

The backend (:mod:`n2nonnx.backend`) executes ONNX graphs; this package trains them:
:func:`train` with a :class:`TrainConfig` recipe (optimizers and schedules in
:mod:`~n2nonnx.training.optim`, losses in :mod:`~n2nonnx.training.losses`), recorded per
epoch in a :class:`History`.
"""

from n2nonnx.training.config import TrainConfig
from n2nonnx.training.history import EpochRecord, History
from n2nonnx.training.loop import TrainResult, evaluate, train
from n2nonnx.training.losses import LOSSES, output_kind
from n2nonnx.training.optim import OPTIMIZERS, SCHEDULES

__all__ = [
    "LOSSES", "OPTIMIZERS", "SCHEDULES", "EpochRecord", "History", "TrainConfig", "TrainResult",
    "evaluate", "output_kind", "train",
]
