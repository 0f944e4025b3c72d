"""One entry point from anything a user may call "data" to a checked :class:`TrainTestData`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from n2nonnx.data.adapters import from_arrays, from_npz, from_torch, is_torch_dataset
from n2nonnx.data.builtin import load_builtin, parse_spec
from n2nonnx.data.dataset import TrainTestData
from n2nonnx.data.shapes import Dim, fit_to_input


def resolve_data(
    spec: Any,
    *,
    input_shape: Sequence[Dim] | None = None,
    seed: int = 0,
    input_name: str = "input",
) -> TrainTestData:
    """Turn a data specification into train / held-out tensors that fit a model's input.

    Args:
        spec: one of
            a built-in name with optional options (``"mnist1d"``, ``"digits"``,
            ``"synthetic:features=32,classes=10"``; see :mod:`n2nonnx.data.builtin`);
            a path to an ``.npz`` file with ``x_train, y_train, x_test, y_test``;
            arrays (see :func:`n2nonnx.data.adapters.from_arrays`);
            a torch Dataset or ``(train_dataset, test_dataset)``;
            a :class:`TrainTestData` (checked and passed through).
        input_shape: the model input's shape, batch dimension first (symbolic dims as
            strings or ``None``); ``None`` skips the check. Built-in data is reshaped to fit
            (``(N, 40)`` or ``(N, 1, 40)`` for MNIST-1D, by the input's rank).
        seed: seed of hold-out splits when only one set of samples is given (it does not
            change built-in data, whose options carry their own ``seed``).
        input_name: the model input's name, for error messages.

    Returns:
        The data set, inputs float32 and labels int64.

    Raises:
        DataError: unknown name, missing file or key, mis-shaped arrays, or data that does
            not fit ``input_shape`` (the message names both shapes).
    """
    data = _load(spec, seed)
    return fit_to_input(data, input_shape, input_name)


def _load(spec: Any, seed: int) -> TrainTestData:
    if isinstance(spec, TrainTestData):
        return spec
    if isinstance(spec, str | os.PathLike):
        text = os.fspath(spec)
        if text.lower().endswith(".npz") or os.path.sep in text or os.path.isfile(text):
            return from_npz(text)
        name, options = parse_spec(text)
        return load_builtin(name, **options)
    if is_torch_dataset(spec):
        return from_torch(spec, seed=seed)
    return from_arrays(spec, seed=seed)  # anything else: a DataError naming accepted forms
