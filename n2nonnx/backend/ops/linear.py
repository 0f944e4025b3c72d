"""MatMul, Gemm and Einsum."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from n2nonnx.backend.registry import register_op
from n2nonnx.backend.spec import Kernel, NodeSpec


@register_op("MatMul", versions=(1, 9, 13))
def matmul(spec: NodeSpec) -> Kernel:
    """MatMul with numpy broadcasting semantics."""
    return torch.matmul


@register_op("Gemm", versions=(1, 6, 7, 9, 11, 13))
def gemm(spec: NodeSpec) -> Kernel:
    """Gemm: alpha * A' @ B' + beta * C, with optional transposes and optional C (opset 11).

    Before opset 7, C had the output's shape or was broadcast (``broadcast=1``) to it, which
    the unidirectional broadcasting used here computes alike.
    """
    alpha, beta = spec.attr("alpha", 1.0), spec.attr("beta", 1.0)
    trans_a, trans_b = spec.attr("transA", 0), spec.attr("transB", 0)

    def generic(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        if trans_a:
            a = a.t()
        if trans_b:
            b = b.t()
        if c is not None and alpha == 1.0 and a.is_floating_point() and c.dim() <= 2:
            return torch.addmm(c, a, b, beta=beta)
        out = a @ b
        if alpha != 1.0:
            out = out * alpha
        if c is not None:
            out = out + (c * beta if beta != 1.0 else c)
        return out

    if not (trans_b and not trans_a and alpha == 1.0 and beta == 1.0):
        return generic
    linear = F.linear

    def linear_kernel(
        a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None = None
    ) -> torch.Tensor:
        # what nn.Linear runs: one fused op, no separate transpose in the autograd graph
        if a.is_floating_point() and (c is None or (c.dim() == 1 and c.shape[0] == b.shape[0])):
            return linear(a, b, c)
        return generic(a, b, c)

    return linear_kernel


@register_op("Einsum", versions=(12, 28))
def einsum(spec: NodeSpec) -> Kernel:
    """Einsum with the node's equation."""
    equation = spec.attr("equation").replace(" ", "")
    return lambda *operands: torch.einsum(equation, *operands)
