"""Deployment: fold masks, remove dead units, store sparse weights compactly, quantize, verify.

:func:`deploy` is the stage; :func:`~n2nonnx.units.remove_units` is the
structured transform it (and structured pruning) builds on.
"""

from n2nonnx.deployment.stage import STORAGE_MODES, DeployResult, deploy
from n2nonnx.units import remove_units

__all__ = ["STORAGE_MODES", "DeployResult", "deploy", "remove_units"]
