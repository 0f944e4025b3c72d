"""PyTorch backend: execute and train ONNX graphs (op registry, OnnxModule, write-back).

Importing this package imports :mod:`n2nonnx.backend.ops`, whose converters register
themselves in :mod:`n2nonnx.backend.registry` (which imports none of them).
"""

from __future__ import annotations

from n2nonnx.backend import ops  # noqa: F401  (importing the converters registers them)
from n2nonnx.backend.module import OnnxModule
from n2nonnx.backend.registry import register_op, resolve, supported_ops
from n2nonnx.backend.spec import NodeSpec

__all__ = ["NodeSpec", "OnnxModule", "register_op", "resolve", "supported_ops"]
