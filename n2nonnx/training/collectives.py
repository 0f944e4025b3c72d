"""Collectives that keep the processes of a distributed run in agreement.

A failure on one rank is raised on every rank (:func:`all_or_none`, :func:`check`), rank
0's decisions reach every rank (:func:`from_main`), ranks that read different inputs are
refused (:func:`check_same_inputs`) and metric sums are reduced (:func:`sum_across`).
Every function is a no-op (or returns its input) in a single process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from n2nonnx.errors import InvalidArgumentError, N2NError, WorkFailedError
from n2nonnx.training.process_group import DistContext


class RankFailedError(WorkFailedError):
    """Another process of a distributed run failed (its own traceback says why)."""


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


def check_same_options(ctx: DistContext, parsed: dict[str, Any]) -> None:
    """Collective: refuse, on every rank, a run whose ranks were started with other options.

    Run first, before any work: a rank with ``--epochs 3`` where the others have 1 would wait
    in a collective the others never reach.

    Args:
        ctx: this process's place.
        parsed: option name -> value (``repr`` compared, so any value will do).

    Raises:
        InvalidArgumentError: naming the first rank that differs from rank 0 and its options.
    """
    if not ctx.active:
        return
    import hashlib

    import torch.distributed as dist

    mine = {key: repr(value) for key, value in sorted(parsed.items())}
    digest = hashlib.sha256(repr(mine).encode()).hexdigest()
    digests: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(digests, digest)
    if all(value == digests[0] for value in digests):
        return
    everything: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(everything, mine)
    rank = next(r for r, value in enumerate(digests) if value != digests[0])
    theirs, main = everything[rank], everything[0]
    keys = [key for key in sorted(set(theirs) | set(main)) if theirs.get(key) != main.get(key)]
    shown = ", ".join(
        f"--{key.replace('_', '-')} {theirs.get(key)} (rank 0: {main.get(key)})" for key in keys[:3]
    )
    raise InvalidArgumentError(
        f"rank {rank} of {ctx.world_size} was started with other options than rank 0: {shown}; "
        "start every process with the same command line"
    )


def _object_device() -> Any:
    """Where small CPU-side check tensors go: CPU unless the group is NCCL-only."""
    import torch
    import torch.distributed as dist

    backend = str(dist.get_backend())
    return torch.device("cpu") if ("gloo" in backend or "cpu" in backend) else torch.device("cuda")


def sum_across(ctx: DistContext, *values: Any) -> list[Any]:
    """All-reduce (sum) scalar tensors across ranks; returns them (in place when distributed)."""
    if ctx.active:
        import torch
        import torch.distributed as dist

        packed = torch.stack([value.double() for value in values])
        dist.all_reduce(packed)
        return list(packed.unbind())
    return list(values)
