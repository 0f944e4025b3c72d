"""PyTorch backend: execute and train ONNX graphs (op registry, OnnxModule, write-back)."""

from __future__ import annotations

from n2nonnx.backend.module import OnnxModule
from n2nonnx.backend.registry import NodeSpec, register_op, resolve, supported_ops

__all__ = ["NodeSpec", "OnnxModule", "register_op", "resolve", "supported_ops"]
