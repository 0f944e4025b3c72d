"""Classification losses by name, and what a model's first output holds."""

from __future__ import annotations

from collections.abc import Callable

import onnx
import torch


def _cross_entropy(output: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "probabilities":
        return torch.nn.functional.nll_loss(torch.log(output.clamp_min(1e-12)), target)
    if kind == "log_probabilities":
        return torch.nn.functional.nll_loss(output, target)
    return torch.nn.functional.cross_entropy(output, target)


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor, str], torch.Tensor]] = {
    "cross_entropy": _cross_entropy,
}


def output_kind(proto: onnx.ModelProto) -> str:
    """What the first graph output holds: ``"logits"``, ``"probabilities"`` (a final
    Softmax, common in Keras exports) or ``"log_probabilities"`` (a final LogSoftmax)."""
    name = proto.graph.output[0].name
    for node in proto.graph.node:
        if name in node.output:
            return {"Softmax": "probabilities", "LogSoftmax": "log_probabilities"}.get(
                node.op_type, "logits"
            )
    return "logits"


# -------------------------------------------------------------------------------- training
