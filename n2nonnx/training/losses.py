"""Classification losses by name, and what a model's first output holds."""

from __future__ import annotations

from typing import Protocol

import onnx
import torch


class Loss(Protocol):
    """A classification loss: the batch mean for class scores against integer labels."""

    def __call__(self, output: torch.Tensor, target: torch.Tensor, *, kind: str) -> torch.Tensor:
        """The loss of ``output`` against ``target``.

        Args:
            output: ``(batch, classes)`` class scores.
            target: ``(batch,)`` int64 class labels.
            kind: what ``output`` holds (see :func:`output_kind`).

        Returns:
            The scalar loss.
        """
        ...


def _cross_entropy(output: torch.Tensor, target: torch.Tensor, *, kind: str) -> torch.Tensor:
    if kind == "probabilities":
        return torch.nn.functional.nll_loss(torch.log(output.clamp_min(1e-12)), target)
    if kind == "log_probabilities":
        return torch.nn.functional.nll_loss(output, target)
    return torch.nn.functional.cross_entropy(output, target)


LOSSES: dict[str, Loss] = {
    "cross_entropy": _cross_entropy,
}


def score_model(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The model cut down to its class-score output (see :mod:`n2nonnx.graph.outputs`).

    skl2onnx puts an int64 ``label`` before ``probabilities``; the label branch's nodes go.

    Args:
        proto: the model (not modified).

    Returns:
        The model with the class scores as its only output (``proto`` itself when it has
        one output already).
    """
    from n2nonnx.graph.outputs import scores_only

    return scores_only(proto)


def output_kind(proto: onnx.ModelProto) -> str:
    """What the class-score output holds (see :func:`n2nonnx.graph.outputs.output_kind`).

    Args:
        proto: the model.

    Returns:
        ``"logits"``, ``"probabilities"`` or ``"log_probabilities"``.
    """
    from n2nonnx.graph.outputs import output_kind as kind_of

    return kind_of(proto)


# -------------------------------------------------------------------------------- training
