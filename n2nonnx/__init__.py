"""n2nonnx: prune ONNX models at initialization, add N2NSkip connections, train, deploy.

The public verbs: :func:`load`, :func:`save`, :func:`prune`, :func:`train`; the stages live
in their subpackages (``n2nonnx.pruning``, ``n2nonnx.backend``, ``n2nonnx.connectivity`` ...).
"""

from n2nonnx.backend.trainer import History, TrainResult, train
from n2nonnx.data import resolve_data
from n2nonnx.errors import N2NError
from n2nonnx.io import load, save
from n2nonnx.model import Model
from n2nonnx.pruning import prune  # noqa: E402  (the verb shadows the subpackage name)

__version__ = "0.1.0"

__all__ = [
    "History", "Model", "N2NError", "TrainResult", "__version__", "load", "prune", "resolve_data",
    "save", "train",
]
