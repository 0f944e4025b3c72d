"""Bridges from frameworks into ONNX, each checked with onnxruntime against the source model.

One module per framework (``converters.pytorch``, ``converters.keras``, ``converters.jax``,
``converters.sklearn``, ``converters.paddle``), each with ``export(...)`` returning an
:class:`ExportReport` and a ``python -m converters.NAME`` command. Importing this package
imports no framework.
"""

from converters._common import ExportReport

__all__ = ["ExportReport"]
