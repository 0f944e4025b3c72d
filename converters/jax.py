"""The JAX / Flax bridge: export a function or ``flax.nnx`` module with jax2onnx, checked in onnxruntime.

Command line::

    python -m converters.jax mypackage.models:small_cnn --input-shape 1x32x32x3 -o cnn.onnx

The batch dimension is exported symbolic (``B``). Flax convolutions are channels-last;
jax2onnx wraps them in Transposes, which n2nonnx reads through.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from converters._common import ExportReport, factory_main, finish, missing


def export(
    function: Callable,
    example: np.ndarray,
    path: str | Path | None = None,
    *,
    opset: int = 17,
    dynamic_batch: bool = True,
) -> ExportReport:
    """Export a JAX callable (a ``flax.nnx.Module`` or a function of one array) with jax2onnx.

    Args:
        function: the model; called on one float32 array.
        example: an example input (batch first).
        path: where to write the ``.onnx`` file (None: keep it in memory).
        opset: default-domain opset.
        dynamic_batch: export the batch dimension as the symbol ``B``.

    Returns:
        An :class:`~converters.pytorch.ExportReport`.
    """
    try:
        import jax.numpy as jnp
        from jax2onnx import to_onnx
    except ImportError:
        raise missing("jax / jax2onnx", "jax") from None
    example = np.asarray(example, dtype=np.float32)
    shape = (("B",) if dynamic_batch else (example.shape[0],)) + tuple(example.shape[1:])
    proto = to_onnx(function, [shape], opset=opset, return_mode="proto")
    expected = function(jnp.asarray(example))
    expected = expected if isinstance(expected, (list, tuple)) else [expected]
    return finish(
        proto, {proto.graph.input[0].name: example}, [np.asarray(e) for e in expected], path
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m converters.jax MODULE:CALLABLE --input-shape 1x32x32x3 -o out.onnx``."""
    return factory_main(
        argv,
        framework="jax",
        description="Export a JAX / Flax model to ONNX (jax2onnx) and check it in onnxruntime.",
        what="a flax.nnx.Module or a JAX function of one array",
        export=export,
    )


if __name__ == "__main__":
    sys.exit(main())
