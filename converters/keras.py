"""The Keras / TensorFlow bridge: export a Keras model with tf2onnx and check it in onnxruntime.

Command line::

    python -m converters.keras mypackage.models:small_cnn --input-shape 1x32x32x3 -o cnn.onnx

The model is traced as a ``tf.function`` (``tf2onnx.convert.from_function``), which works
for Keras 3, whose ``from_keras`` path tf2onnx does not follow. The batch dimension is
left symbolic. Images stay channels-last at the input; tf2onnx inserts the Transpose to
the channels-first convolutions, and n2nonnx reads the input's units through it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from converters._common import ExportReport, factory_main, finish, missing


def export(
    model: Any,
    example: np.ndarray,
    path: str | Path | None = None,
    *,
    opset: int = 17,
    input_name: str = "x",
) -> ExportReport:
    """Export a Keras model (inference mode) with tf2onnx and compare it with onnxruntime.

    Args:
        model: a built ``keras.Model`` with one input.
        example: an example input (batch first); its non-batch dims fix the input shape.
        path: where to write the ``.onnx`` file (None: keep it in memory).
        opset: default-domain opset.
        input_name: the graph input's name.

    Returns:
        An :class:`~converters.pytorch.ExportReport`.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import tensorflow as tf
        import tf2onnx
    except ImportError:
        raise missing("tensorflow / tf2onnx", "keras") from None
    example = np.asarray(example, dtype=np.float32)
    spec = (tf.TensorSpec((None, *example.shape[1:]), tf.float32, name=input_name),)
    function = tf.function(lambda x: model(x, training=False), input_signature=spec)
    proto, _ = tf2onnx.convert.from_function(function, input_signature=spec, opset=opset)
    expected = model(example, training=False)
    expected = expected if isinstance(expected, (list, tuple)) else [expected]
    return finish(
        proto, {proto.graph.input[0].name: example}, [np.asarray(e) for e in expected], path
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m converters.keras MODULE:CALLABLE --input-shape 1x32x32x3 -o out.onnx``."""
    return factory_main(
        argv,
        framework="keras",
        description="Export a Keras model to ONNX (tf2onnx) and check it in onnxruntime.",
        what="a built keras.Model",
        export=export,
    )


if __name__ == "__main__":
    sys.exit(main())
