"""Training on several processes with torch.distributed (torchrun, DDP).

This module holds where this process stands, the process group, data shards,
DistributedDataParallel, and the collective checks and reductions.
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

import atexit
import contextlib
import inspect
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from n2nonnx.errors import InvalidArgumentError, N2NError, WorkFailedError

log = logging.getLogger(__name__)

#: seconds a collective may wait for the other processes before failing
DEFAULT_TIMEOUT_S = 900.0
# ops whose inner graphs decide at run time which parameters they use
_CONTROL_FLOW = {"If", "Loop", "Scan"}


class RankFailedError(WorkFailedError):
    """Another process of a distributed run failed (its own traceback says why)."""


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a (possibly one-process) run.

    Attributes:
        rank: this process's index among all processes (0 ... world_size - 1).
        world_size: number of processes.
        local_rank: index among the processes of this machine (picks the GPU).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True on rank 0, the one process that prints, logs and writes files."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """True when more than one process trains together."""
        return self.world_size > 1


def context() -> DistContext:
    """This process's rank, world size and local rank.

    Read from the initialised default process group if there is one, else from the
    variables ``torchrun`` sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), else a single
    process. Initialises nothing, so a CLI verb may ask before (or after) training.

    Returns:
        The context; ``is_main`` tells whether this process may write files and print.
    """
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return DistContext(dist.get_rank(), dist.get_world_size(), local)
    if launched():
        return DistContext(
            int(os.environ["RANK"]),
            int(os.environ["WORLD_SIZE"]),
            int(os.environ.get("LOCAL_RANK", 0)),
        )
    return DistContext()


def launched() -> bool:
    """True when started by ``torchrun`` (or any launcher setting ``RANK`` and ``WORLD_SIZE``)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def device_for(device: Any, ctx: DistContext) -> Any:
    """The device of this process: a bare ``"cuda"`` becomes ``cuda:<local rank>``.

    Args:
        device: what the caller asked for (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a torch device).
        ctx: this process's place.

    Returns:
        ``device`` unchanged unless it names CUDA without an index in a multi-process run.
    """
    if not ctx.active:
        return device
    import torch

    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        return device  # refused with a readable message by the caller's device check
    if resolved.type == "cuda" and resolved.index is None:
        return torch.device("cuda", ctx.local_rank)
    return device


def join(
    distributed: bool | None, device: Any, *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> DistContext:
    """Join the process group a training run needs, initialising it once per process.

    Args:
        distributed: ``None``: distributed when launched by ``torchrun`` with more than one
            process or inside an initialised group of more than one; ``True``: require it;
            ``False``: train alone.
        device: the training device; picks the backend (``nccl`` for CUDA, ``gloo`` otherwise;
            CUDA runs also get ``gloo`` for CPU-side checks).
        timeout_s: how long a collective waits for the other processes.

    Returns:
        The context; ``world_size == 1`` means an ordinary single-process run.

    Raises:
        InvalidArgumentError: ``distributed=True`` outside ``torchrun`` and outside a group.
    """
    if distributed is False:
        return DistContext()
    import torch
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return context()
    if not launched():
        if distributed:
            raise InvalidArgumentError(
                "distributed=True needs several processes: start with `torchrun --nproc-per-node N "
                "-m n2nonnx ...` or call torch.distributed.init_process_group first"
            )
        return DistContext()
    ctx = context()
    if not ctx.active:
        return ctx
    if not dist.is_available():
        raise InvalidArgumentError(
            "this torch build has no torch.distributed; train with one process"
        )
    wanted = device_for(device, ctx)
    on_cuda = (
        isinstance(wanted, torch.device | str)
        and str(wanted).startswith("cuda")
        and torch.cuda.is_available()
    )
    if on_cuda:
        torch.cuda.set_device(torch.device(wanted))
    backend = "cpu:gloo,cuda:nccl" if on_cuda else "gloo"
    # once per process: re-initialising under torchrun reuses its rendezvous keys and fails,
    # so the group lives until the interpreter exits (a CLI verb may use session() instead)
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    atexit.register(_destroy)
    if ctx.is_main:
        log.info("joined a process group of %d processes (%s)", ctx.world_size, backend)
    return context()


@contextlib.contextmanager
def session(device: Any = "cpu", *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[DistContext]:
    """A whole command's process group: joined on entry (under ``torchrun``), left on exit.

    Every :func:`~n2nonnx.training.train` call inside reuses it. Outside ``torchrun`` it
    yields a single-process context and does nothing.

    Args:
        device: the training device (picks the backend).
        timeout_s: how long a collective waits for the other processes.

    Yields:
        This process's context.
    """
    import torch.distributed as dist

    created = launched() and not (dist.is_available() and dist.is_initialized())
    ctx = join(None, device, timeout_s=timeout_s)
    try:
        yield ctx
    finally:
        if created and dist.is_initialized():
            _destroy()


def _destroy() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


# -------------------------------------------------------------------------------- agreement


@contextlib.contextmanager
def all_or_none(ctx: DistContext) -> Iterator[None]:
    """Run a block on every rank; if it raises on any rank, raise one error on all of them.

    Put every check that can fail on one rank only (its data file, its model file) inside,
    before the first collective of the work, so that no rank is left waiting.

    Args:
        ctx: this process's place.

    Raises:
        The failing rank's error class (an :class:`N2NError`) with ``rank R of N:`` before its
        message, on every rank; :class:`RankFailedError` on the others when a rank failed
        with anything else (that rank re-raises its own exception).
    """
    error: BaseException | None = None
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - reported to every rank below
        if not ctx.active:
            raise
        error = exc
    if ctx.active:
        check(ctx, error)


def check(ctx: DistContext, error: BaseException | None) -> None:
    """Collective: every rank reports whether it failed; if any did, all raise (see :func:`all_or_none`).

    Args:
        ctx: this process's place (a no-op unless ``ctx.active``).
        error: this rank's failure, or ``None``.
    """
    if not ctx.active:
        if error is not None:
            raise error
        return
    import torch
    import torch.distributed as dist

    failed = torch.tensor([1 if error is not None else 0], device=_object_device())
    dist.all_reduce(failed, op=dist.ReduceOp.MAX)
    if not int(failed.item()):
        return
    reports: list[Any] = [None] * ctx.world_size
    mine = (
        None
        if error is None
        else (
            type(error) if isinstance(error, N2NError) else None,
            str(error),
            type(error).__name__,
        )
    )
    dist.all_gather_object(reports, mine)
    rank, (kind, message, kind_name) = next(
        (r, report) for r, report in enumerate(reports) if report
    )
    if kind is not None:
        raise kind(f"rank {rank} of {ctx.world_size}: {message}") from error
    if error is not None and rank == ctx.rank:
        raise error
    raise RankFailedError(f"rank {rank} of {ctx.world_size} failed with {kind_name}: {message}")


def from_main(value: Any, ctx: DistContext) -> Any:
    """Collective: rank 0's ``value`` on every rank.

    For a decision only rank 0 can make, such as which study cells its output folder holds.

    Args:
        value: a picklable value (ignored on the other ranks).
        ctx: this process's place (returns ``value`` unless ``ctx.active``).

    Returns:
        Rank 0's value.
    """
    if not ctx.active:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def check_same_inputs(ctx: DistContext, fingerprint: tuple[Any, ...], what: str) -> None:
    """Collective: refuse, on every rank, a run whose ranks read different models or data.

    Args:
        ctx: this process's place.
        fingerprint: a small picklable summary (sizes, checksums) that equal inputs share.
        what: what was compared, for the message.

    Raises:
        InvalidArgumentError: some rank's fingerprint differs from rank 0's.
    """
    if not ctx.active:
        return
    import torch.distributed as dist

    prints: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(prints, fingerprint)
    differing = [rank for rank, value in enumerate(prints) if value != prints[0]]
    if differing:
        raise InvalidArgumentError(
            f"ranks {differing} read a different {what} than rank 0 ({prints[differing[0]]} vs "
            f"{prints[0]}); every process must read the same files (copy them to every machine)"
        )


def _object_device() -> Any:
    """Where small CPU-side check tensors go: CPU unless the group is NCCL-only."""
    import torch
    import torch.distributed as dist

    backend = str(dist.get_backend())
    return torch.device("cpu") if ("gloo" in backend or "cpu" in backend) else torch.device("cuda")


# -------------------------------------------------------------------------------- data


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


def sum_across(ctx: DistContext, *values: Any) -> list[Any]:
    """All-reduce (sum) scalar tensors across ranks; returns them (in place when distributed)."""
    if ctx.active:
        import torch
        import torch.distributed as dist

        packed = torch.stack([value.double() for value in values])
        dist.all_reduce(packed)
        return list(packed.unbind())
    return list(values)


# -------------------------------------------------------------------------------- the module


def unused_parameters(module: Any, sample: Any, loss_fn: Any, target: Any) -> list[str]:
    """Trainable parameters that get no gradient from the loss of the first output.

    A skip branch whose mask is all zero still gets (zero) gradients; what gets none is a
    parameter only a second output (which the loss ignores) or an integer path reads. One
    forward and backward in eval mode (running statistics untouched) on a few samples.

    Returns:
        Their registered names (as in ``named_parameters``).
    """
    import torch

    named = [(name, param) for name, param in module.named_parameters() if param.requires_grad]
    was_training = module.training
    module.eval()
    try:
        with torch.enable_grad():
            output = module(sample)
            scores = output[0] if isinstance(output, tuple | list) else output
            loss = loss_fn(scores.reshape(len(scores), -1).float(), target)
            grads = torch.autograd.grad(loss, [param for _, param in named], allow_unused=True)
    finally:
        module.train(was_training)
    return [name for (name, _), grad in zip(named, grads, strict=True) if grad is None]


def has_control_flow(proto: Any) -> bool:
    """True if the graph has If / Loop / Scan nodes (parameter use may vary per batch)."""
    return any(node.op_type in _CONTROL_FLOW for node in proto.graph.node)


def broadcast_buffers(module: Any, ctx: DistContext) -> None:
    """Give every rank rank 0's buffers (masks, constants, running statistics), in place."""
    if not ctx.active:
        return
    import torch.distributed as dist

    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)


def wrap(module: Any, ctx: DistContext, *, find_unused: bool) -> Any:
    """``module`` in DistributedDataParallel: gradients averaged across ranks in ``backward``.

    Parameters and buffers are broadcast from rank 0 first; buffers are not re-broadcast at
    every forward (see the module docstring).

    Args:
        module: the OnnxModule, with every parameter created and on its device.
        ctx: this process's place.
        find_unused: let DDP look for parameters without a gradient at every step (needed
            when :func:`unused_parameters` found some; costs a graph traversal per step).

    Returns:
        The wrapped module; train through it, apply masks and write back on ``.module``.
    """
    from torch.nn.parallel import DistributedDataParallel

    broadcast_buffers(module, ctx)
    device = next(module.parameters()).device
    options: dict[str, Any] = {"find_unused_parameters": find_unused}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:
        options["forward_sync_buffers"] = False  # torch >= 2.13
    else:
        options["broadcast_buffers"] = False
    if device.type == "cuda":
        options["device_ids"] = [device.index]
    return DistributedDataParallel(module, **options)
