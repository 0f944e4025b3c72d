"""The ``onnxruntime`` target (the default): the verified ONNX model as it is."""

from __future__ import annotations

from n2nonnx.deployment.targets.base import Target


class OnnxRuntimeTarget(Target):
    """Stock onnxruntime, any execution provider: the deployed ``.onnx`` file."""

    name = "onnxruntime"
    suffix = ".onnx"
