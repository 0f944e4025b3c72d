"""Where this process stands and the process group a distributed run trains in.

:func:`context` reads this process's rank from an initialised process group or from the
variables ``torchrun`` sets; :func:`join` initialises the group once per process and
:func:`session` holds one for a whole command. Nothing here imports torch at module level,
so a CLI verb may ask before (or after) training. The rules of distributed training are in
:mod:`n2nonnx.training.distributed`.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from n2nonnx.errors import InvalidArgumentError

log = logging.getLogger(__name__)

#: seconds a collective may wait for the other processes before failing
DEFAULT_TIMEOUT_S = 900.0


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
