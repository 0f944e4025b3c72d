"""Training on several processes with torch.distributed (torchrun, DDP).

This module gathers the public names of the four modules that implement it: where this
process stands and the process group (:mod:`~n2nonnx.training.process_group`), the
collective checks and reductions (:mod:`~n2nonnx.training.collectives`), data shards
(:mod:`~n2nonnx.training.shards`) and DistributedDataParallel (:mod:`~n2nonnx.training.ddp`).
:func:`~n2nonnx.training.train` uses this module when the program was started by
``torchrun`` (``RANK`` / ``WORLD_SIZE`` in the environment) or inside an initialised
process group. The rules it implements:

- ``batch_size`` is the *global* batch: samples per optimizer step summed over all
  processes; each process takes ``batch_size / world_size`` of them (it must divide).
  A recipe therefore means the same thing at any process count: same steps per epoch,
  same learning-rate schedule, and (SGD, no BatchNorm) the same weights as one process.
- Data is sharded like ``torch.utils.data.DistributedSampler`` (it *is* one): seeded with
  the recipe's seed, reshuffled per epoch with ``set_epoch``, padded by repeating a few
  samples so every process takes the same number of steps.
- Every process builds the same module from the same file; parameters *and* buffers
  (masks, running statistics) are broadcast from rank 0 once when DDP wraps the module,
  and the buffers again before each evaluation. They are not broadcast at every forward
  (masks never change; trainable values are parameters, which a buffer broadcast never
  touches anyway): BatchNorm running statistics are rank 0's, as with DDP's default.
- A failure on any rank before training (bad data, a different model file) is raised on
  every rank as one error naming the rank; nothing is written.
"""

from __future__ import annotations

from n2nonnx.training.collectives import (
    RankFailedError,
    all_or_none,
    check,
    check_same_inputs,
    check_same_options,
    from_main,
    sum_across,
)
from n2nonnx.training.ddp import broadcast_buffers, has_control_flow, unused_parameters, wrap
from n2nonnx.training.process_group import (
    DEFAULT_TIMEOUT_S,
    DistContext,
    context,
    device_for,
    join,
    launched,
    session,
)
from n2nonnx.training.shards import Shards, held_out_slice, per_rank_batch

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DistContext",
    "RankFailedError",
    "Shards",
    "all_or_none",
    "broadcast_buffers",
    "check",
    "check_same_inputs",
    "check_same_options",
    "context",
    "device_for",
    "from_main",
    "has_control_flow",
    "held_out_slice",
    "join",
    "launched",
    "per_rank_batch",
    "session",
    "sum_across",
    "unused_parameters",
    "wrap",
]
