"""What the per-step hook of :func:`~n2nonnx.training.train` receives: :class:`StepInfo`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch and the backend are imported by the loop, not by this record
    import torch

    from n2nonnx.backend import OnnxModule


@dataclass(frozen=True)
class StepInfo:
    """One optimizer step of a training run, as ``on_step`` sees it.

    The hook is called after the step is complete: the optimizer has stepped, every masked
    weight is zero again and the learning-rate schedule has advanced. Gradients are still
    on the parameters (the next step clears them).

    Attributes:
        step: index of this step in the run, from 0 (``epoch`` steps of the run are
            ``steps_per_epoch * (epoch - 1)`` ... ``steps_per_epoch * epoch - 1``).
        epoch: the epoch, from 1.
        loss: the batch's mean loss, a detached scalar tensor on the training device
            (``float(info.loss)`` waits for a GPU; read it only when needed).
        samples: samples in the batch (on this process).
        lr: the learning rate the step used (first parameter group).
        module: the module being trained (the :class:`~n2nonnx.backend.OnnxModule`
            itself, never its DistributedDataParallel or ``wrap_module`` wrapper).
    """

    step: int
    epoch: int
    loss: torch.Tensor
    samples: int
    lr: float
    module: OnnxModule
