"""Training data for n2nonnx: built-in data sets (generated locally) and adapters for user data.

Everything resolves to :class:`TrainTestData` (train and held-out tensors) through
:func:`resolve_data`, which also checks the data against the model's input shape.
"""

from __future__ import annotations

from n2nonnx.data.adapters import from_arrays, from_npz, from_torch
from n2nonnx.data.builtin import BUILTIN_DATASETS, builtin_names, load_builtin, register_dataset
from n2nonnx.data.cache import cache_dir
from n2nonnx.data.dataset import DataSplit, TrainTestData, holdout_split, make_data, standardized
from n2nonnx.data.resolve import resolve_data
from n2nonnx.data.shapes import (
    ModelInput,
    check_classes,
    check_float32_input,
    class_count,
    fit_to_input,
    model_input,
)

__all__ = [
    "BUILTIN_DATASETS",
    "DataSplit",
    "ModelInput",
    "TrainTestData",
    "builtin_names",
    "cache_dir",
    "check_classes",
    "check_float32_input",
    "class_count",
    "fit_to_input",
    "from_arrays",
    "from_npz",
    "from_torch",
    "holdout_split",
    "load_builtin",
    "make_data",
    "model_input",
    "register_dataset",
    "resolve_data",
    "standardized",
]
