"""Dropout: identity in eval mode, inverted dropout in train mode (ratio from attribute or input).

The module's train/eval flag decides, not the node's ``training_mode`` input: a graph
exported in training mode still evaluates deterministically after ``module.eval()``.
"""

from __future__ import annotations

import torch

from n2nonnx.backend.registry import register_op
from n2nonnx.backend.spec import Kernel, NodeSpec


def _dropout_kernel(
    spec: NodeSpec, ratio_attr: float, ratio_input: bool, bool_mask: bool = True
) -> Kernel:
    wants_mask = len(spec.outputs) > 1 and spec.outputs[1] != ""
    is_training = spec.is_training

    def kernel(
        x: torch.Tensor, ratio_t: torch.Tensor | None = None, training_t: torch.Tensor | None = None
    ):
        training = is_training()
        ratio = float(ratio_t.reshape(-1)[0]) if ratio_input and ratio_t is not None else ratio_attr
        if not training or ratio == 0.0:
            if wants_mask:
                return x, torch.ones_like(x, dtype=torch.bool if bool_mask else x.dtype)
            return x
        if not wants_mask:
            return torch.nn.functional.dropout(x, ratio, True)
        keep = torch.rand_like(x, dtype=torch.float32) >= ratio
        y = x * keep.to(x.dtype) / (1.0 - ratio)
        return (y, keep if bool_mask else keep.to(x.dtype)) if wants_mask else y

    return kernel


@register_op("Dropout", versions=(1, 6, 7, 10))
def dropout_attr(spec: NodeSpec) -> Kernel:
    """Dropout before opset 12: ``ratio`` attribute (default 0.5); the mask is boolean from opset 10.

    ``is_test`` (before opset 7) is ignored: the module's train/eval flag decides.
    """
    return _dropout_kernel(
        spec, spec.attr("ratio", 0.5), False, bool_mask=(spec.schema_version or 10) >= 10
    )


@register_op("Dropout", versions=(12, 13, 22))
def dropout(spec: NodeSpec) -> Kernel:
    """Dropout from opset 12: optional ``ratio`` and ``training_mode`` inputs."""
    return _dropout_kernel(spec, 0.5, True)
