"""Dropout: identity in eval mode, inverted dropout in train mode (ratio from attribute or input).

The module's train/eval flag decides, not the node's ``training_mode`` input: a graph
exported in training mode still evaluates deterministically after ``module.eval()``.
"""

from __future__ import annotations

import torch

from n2nonnx.backend.registry import NodeSpec, register_op


def _dropout_kernel(spec: NodeSpec, ratio_attr: float, ratio_input: bool):
    wants_mask = len(spec.outputs) > 1 and spec.outputs[1] != ""
    is_training = spec.is_training

    def kernel(x: torch.Tensor, ratio_t=None, training_t=None):
        training = is_training()
        ratio = float(ratio_t.reshape(-1)[0]) if ratio_input and ratio_t is not None else ratio_attr
        if not training or ratio == 0.0:
            if wants_mask:
                return x, torch.ones_like(x, dtype=torch.bool)
            return x
        if not wants_mask:
            return torch.nn.functional.dropout(x, ratio, True)
        keep = torch.rand_like(x, dtype=torch.float32) >= ratio
        y = x * keep.to(x.dtype) / (1.0 - ratio)
        return (y, keep) if wants_mask else y

    return kernel


@register_op("Dropout", since=1)
def dropout_attr(spec: NodeSpec):
    """Dropout before opset 12: ``ratio`` attribute (default 0.5)."""
    return _dropout_kernel(spec, spec.attr("ratio", 0.5), False)


@register_op("Dropout", since=12)
def dropout(spec: NodeSpec):
    """Dropout from opset 12: optional ``ratio`` and ``training_mode`` inputs."""
    return _dropout_kernel(spec, 0.5, True)
