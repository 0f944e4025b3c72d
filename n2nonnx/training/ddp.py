"""The module in a distributed run: DistributedDataParallel, buffer broadcasts, unused parameters."""

from __future__ import annotations

import inspect
from typing import Any

from n2nonnx.training.process_group import DistContext

# ops whose inner graphs decide at run time which parameters they use
_CONTROL_FLOW = {"If", "Loop", "Scan"}


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
    every forward (see :mod:`n2nonnx.training.distributed`).

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
