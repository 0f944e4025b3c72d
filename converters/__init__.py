"""Bridges from frameworks into ONNX, each checked with onnxruntime against the source model."""

from converters.pytorch import ExportReport, export

__all__ = ["ExportReport", "export"]
