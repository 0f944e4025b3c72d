"""SCL's update rule in pieces: Identity straight-through step, per-unit normalisation, penalty.

Each weight is ``w = theta * step(m)`` with ``step(m) = 1 if m > 0 else 0``. The step has a
zero gradient almost everywhere, so the backward pass uses the Identity straight-through
estimator, ``d step(m) / dm := 1``: the gradient reaching ``m`` is the gradient of the loss
with respect to the gate, ``dL/dw * theta``, for connections that are on and off alike (a
pruned connection can come back).
"""

from __future__ import annotations

from typing import Any

import torch


class IdentityStep(torch.autograd.Function):
    """``step(m)`` forward (exact 0.0 / 1.0 in ``m``'s dtype), identity backward."""

    @staticmethod
    def forward(ctx: Any, mask_values: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return (mask_values > 0).to(mask_values.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return grad_output


def step_ste(mask_values: torch.Tensor) -> torch.Tensor:
    """The binary gate ``step(m)``, differentiable through the Identity STE.

    Args:
        mask_values: the real-valued mask variables ``m``.

    Returns:
        A tensor of ``m``'s shape and dtype holding exactly 0.0 or 1.0.
    """
    return IdentityStep.apply(mask_values)


def connection_penalty(mask_values: list[torch.Tensor]) -> torch.Tensor:
    """The regulariser's count ``sum step(m)`` over all mask variables (through the STE).

    Its gradient with respect to every mask variable is exactly 1 (the Identity STE), so
    ``lambda * connection_penalty(...)`` pushes every ``m`` down by ``lambda``, on or off.
    """
    return sum((step_ste(values).sum() for values in mask_values), torch.zeros(()))


NORMALISATIONS = ("rms", "norm")


def normalise_per_unit(grad: torch.Tensor, unit_axis: int, by: str = "rms") -> torch.Tensor:
    """Divide each output unit's mask-gradient vector by its RMS (or its L2 norm).

    Mask gradients differ by orders of magnitude between units (and layers). ``"rms"``: each
    unit's vector gets RMS 1, so one regulariser weight acts on every connection alike.
    ``"norm"``: each unit's vector gets norm 1, so a connection's share shrinks with the
    unit's fan-in (a unit with many inputs gives each one less weight). A unit whose
    gradient is all zero (a dead unit) keeps a zero gradient.

    Args:
        grad: the gradient of the loss with respect to one weight's mask variables.
        unit_axis: the weight axis that indexes output units (neurons / channels).
        by: ``"rms"`` or ``"norm"``.

    Returns:
        The normalised gradient, same shape.
    """
    moved = grad.movedim(unit_axis, 0)
    flat = moved.reshape(moved.shape[0], -1)
    squares = flat.square().mean(dim=1) if by == "rms" else flat.square().sum(dim=1)
    scale = squares.sqrt().clamp_min(torch.finfo(grad.dtype).tiny)
    return (flat / scale[:, None]).reshape(moved.shape).movedim(0, unit_axis)
