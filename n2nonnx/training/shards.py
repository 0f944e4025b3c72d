"""This process's share of the data in a distributed run: batch size, shuffled shards, held-out slice.

``batch_size`` is the *global* batch (:func:`per_rank_batch`); the training split is
sharded like ``torch.utils.data.DistributedSampler`` (:class:`Shards`), the held-out split
is cut into contiguous shares (:func:`held_out_slice`).
"""

from __future__ import annotations

from typing import Any

from n2nonnx.errors import InvalidArgumentError
from n2nonnx.training.process_group import DistContext


def per_rank_batch(batch_size: int, ctx: DistContext) -> int:
    """Samples each process takes per step, ``batch_size`` being the global batch.

    Raises:
        InvalidArgumentError: ``batch_size`` is not a multiple of the process count.
    """
    share, rest = divmod(batch_size, ctx.world_size)
    if rest or share == 0:
        lower = max(ctx.world_size, batch_size - rest)
        raise InvalidArgumentError(
            f"batch_size={batch_size} is the global batch (samples per step over all "
            f"{ctx.world_size} processes) and must be a multiple of {ctx.world_size}; "
            f"use {lower} or {lower + ctx.world_size}"
        )
    return share


class Shards:
    """This rank's batches of each epoch: a seeded ``DistributedSampler`` cut into batches.

    The union of the ranks' ``k``-th batches is the ``k``-th global batch of one process
    reading the same permutation with ``batch_size * world_size``.

    Args:
        samples: size of the training split.
        batch: samples per step on this rank.
        seed: the shuffling seed (the recipe's seed).
        ctx: this process's place.
    """

    def __init__(self, samples: int, batch: int, seed: int, ctx: DistContext) -> None:
        from torch.utils.data.distributed import DistributedSampler

        self.batch = batch
        # torch's stub asks for a Dataset; the sampler only takes len() of what it is given
        self.sampler: DistributedSampler[int] = DistributedSampler(
            range(samples),  # type: ignore[arg-type]  # torch stub, see above
            num_replicas=ctx.world_size,
            rank=ctx.rank,
            shuffle=True,
            seed=seed,
            drop_last=False,
        )

    @property
    def steps(self) -> int:
        """Steps per epoch (equal on every rank); a last batch of one sample is skipped."""
        full, rest = divmod(self.sampler.num_samples, self.batch)
        return full + (1 if rest > 1 else 0)

    def epoch(self, epoch: int) -> list[Any]:
        """The index tensors of this rank's batches in epoch ``epoch`` (0-based)."""
        import torch

        self.sampler.set_epoch(epoch)
        order = torch.tensor(list(self.sampler), dtype=torch.int64)
        return [
            order[start : start + self.batch]
            for start in range(0, self.steps * self.batch, self.batch)
        ]


def held_out_slice(samples: int, ctx: DistContext) -> slice:
    """This rank's contiguous share of the held-out split (evaluated once, no padding)."""
    return slice(ctx.rank * samples // ctx.world_size, (ctx.rank + 1) * samples // ctx.world_size)
