"""Constant folding at module construction: nodes whose inputs are all constants run once.

:class:`~n2nonnx.backend.module.OnnxModule` evaluates such nodes (Constant outputs, shape
arithmetic on integer initializers) while it builds its kernels; their outputs become
non-persistent buffers instead of steps of every forward pass. Floating initializers are
never folded through (they may be trained), nor are random or mode-dependent ops.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx
import torch

#: ops never evaluated at construction even when their inputs are constant
NOT_FOLDABLE = frozenset(
    {
        "Dropout",
        "RandomNormal",
        "RandomUniform",
        "RandomNormalLike",
        "RandomUniformLike",
        "Bernoulli",
        "Multinomial",
        "BatchNormalization",
    }
)
#: initializers larger than this are never read as build-time constants (shapes, axes are tiny)
MAX_CONSTANT_ELEMENTS = 1 << 16


def as_numpy(value: torch.Tensor) -> np.ndarray:
    """A CPU tensor's values as numpy (bfloat16, which numpy lacks, as float32)."""
    return (value.float() if value.dtype == torch.bfloat16 else value).numpy()


def can_fold(node: onnx.NodeProto, inputs: Sequence[str], foldable: set[str]) -> bool:
    """True if ``node`` may run now: a foldable op whose present inputs are all foldable.

    Args:
        node: the node.
        inputs: its input names (after running-stat renames; ``""`` for an omitted input).
        foldable: names of the constants safe to fold through.
    """
    return node.op_type not in NOT_FOLDABLE and all(not n or n in foldable for n in inputs)


def fold(
    node: onnx.NodeProto,
    kernel: Callable[..., Any],
    inputs: Sequence[str],
    constants: dict[str, np.ndarray],
    foldable: set[str],
) -> list[tuple[str, torch.Tensor]]:
    """Run a node whose inputs are all constant once, without gradients.

    Args:
        node: the node.
        kernel: its kernel.
        inputs: its input names (each in ``constants``, or ``""``).
        constants: build-time values by tensor name (extended with the outputs).
        foldable: names of the constants safe to fold through (extended with the outputs).

    Returns:
        (output name, value) for each output the node names, detached copies to hold as buffers.
    """
    with torch.no_grad():
        args = [None if not n else torch.from_numpy(np.array(constants[n])) for n in inputs]
        result = kernel(*args)
    results = (result,) if isinstance(result, torch.Tensor) else tuple(result)
    folded = []
    for name, value in zip(node.output, results, strict=False):
        if not name:
            continue
        folded.append((name, value.detach().clone()))
        constants[name] = as_numpy(value.detach().cpu())
        foldable.add(name)
    return folded
