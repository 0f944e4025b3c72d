"""Running a graph exported with a fixed batch on batches of any size, in chunks of that batch.

An exporter that bakes the batch in (torch's dynamo exporter, ``dynamic_batch=False``)
writes reshape targets such as ``[tokens, batch * heads, 8]``: the graph then runs only at
that batch. Many graphs with a static batch in their input's shape do not depend on it
(convolutions and a Flatten), and they keep running in one pass at any batch size:
:func:`holds_the_batch` tells them apart once, by a pass in eval mode without gradients
(no BatchNorm statistic moves) at one sample more than the fixed batch. For the others
:func:`run_in_chunks` splits every input along dim 0 into chunks of exactly
the model's batch, pads the last chunk by repeating its last sample, runs each chunk and
concatenates the outputs without the padding. Gradients flow through the concatenation as
through one pass; in training mode a BatchNormalization normalises with the statistics of
each chunk (the padding included in the last one), as the exported graph would.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from n2nonnx.errors import DataError


def chunked_size(
    batch: int | None,
    ranks: Sequence[int],
    names: Sequence[str],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
) -> int | None:
    """The number of samples to run in chunks, or None when one plain pass fits.

    Args:
        batch: the model's fixed batch (None: it has a free one).
        ranks: the declared rank of every graph input, in order.
        names: the graph input names, in order.
        args: inputs by position.
        kwargs: inputs by name.

    Returns:
        dim 0 of the inputs when every input has its declared rank and that dim 0 is the
        same size, other than ``batch``; else None.
    """
    if batch is None:
        return None
    rank_of = dict(zip(names, ranks, strict=True))
    values = list(zip(names, args, strict=False)) + [(n, v) for n, v in kwargs.items()]
    sizes = set()
    for name, value in values:
        shape = getattr(value, "shape", None)
        if shape is None or len(shape) != rank_of.get(name, -1) or len(shape) == 0:
            return None
        sizes.add(int(shape[0]))
    if len(sizes) != 1:
        return None
    size = sizes.pop()
    return None if size == batch else size


def holds_the_batch(
    run: Callable[..., Any], batch: int, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> bool:
    """Whether the graph runs only at its fixed batch: a pass at ``batch + 1`` samples fails.

    Args:
        run: one pass of the graph, already in eval mode and without gradients.
        batch: the model's fixed batch.
        args: inputs by position (their first sample is repeated for the probe).
        kwargs: inputs by name.

    Returns:
        True when the probe fails (a graph that runs at ``batch + 1`` keeps one pass, as
        before, whatever its outputs look like).
    """
    size = batch + 1
    try:
        run(
            *[_padded(a, 0, 1, size) for a in args],
            **{k: _padded(v, 0, 1, size) for k, v in kwargs.items()},
        )
    except Exception:  # noqa: BLE001 - any failure at another batch: the graph holds the batch
        return True
    return False


def run_in_chunks(
    run: Callable[..., Any],
    batch: int,
    size: int,
    output_names: Sequence[str],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
) -> Any:
    """``run(*args, **kwargs)`` on chunks of ``batch`` samples, outputs joined along dim 0.

    Args:
        run: one pass of the graph (returns a tensor, or a tuple of tensors).
        batch: the model's fixed batch.
        size: the number of samples in ``args`` and ``kwargs``.
        output_names: the graph outputs, for the message when one is not batch-first.
        args: inputs by position, each with ``size`` samples along dim 0.
        kwargs: inputs by name, likewise.

    Returns:
        What ``run`` returns, for all ``size`` samples.

    Raises:
        DataError: an output's dim 0 is not the batch (it cannot be joined).
    """
    pieces: list[tuple[torch.Tensor, ...]] = []
    single = False
    for start in range(0, size, batch):
        stop = min(start + batch, size)
        result = run(
            *[_padded(a, start, stop, batch) for a in args],
            **{k: _padded(v, start, stop, batch) for k, v in kwargs.items()},
        )
        single = isinstance(result, torch.Tensor)
        outputs = (result,) if single else tuple(result)
        for name, output in zip(output_names, outputs, strict=False):
            if output.dim() == 0 or output.shape[0] != batch:
                raise DataError(
                    f"the model was exported with a fixed batch of {batch} and its output "
                    f"{name!r} (shape {tuple(output.shape)}) is not batch-first, so batches "
                    f"of {size} cannot be run in chunks: feed exactly {batch} samples at a time"
                )
        pieces.append(tuple(o[: stop - start] for o in outputs))
    joined = tuple(torch.cat(parts) for parts in zip(*pieces, strict=True))
    return joined[0] if single else joined


def _padded(value: Any, start: int, stop: int, batch: int) -> Any:
    """Samples ``start:stop`` of ``value``, the last one repeated up to ``batch``."""
    chunk = value[start:stop]
    missing = batch - (stop - start)
    if missing == 0:
        return chunk
    if isinstance(chunk, torch.Tensor):
        return torch.cat([chunk, chunk[-1:].expand(missing, *chunk.shape[1:])])
    return np.concatenate([chunk, np.repeat(np.asarray(chunk)[-1:], missing, axis=0)])
