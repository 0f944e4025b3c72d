"""The in-memory train / held-out data set every data source resolves to, and its checks."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np
import torch

from n2nonnx.errors import DataError


class DataSplit(NamedTuple):
    """One split of a data set: inputs ``x`` (float32) and integer class labels ``y`` (int64)."""

    x: torch.Tensor
    y: torch.Tensor


@dataclass(frozen=True)
class TrainTestData:
    """A classification data set held in memory as torch tensors.

    Attributes:
        x_train: inputs of the training split, shape ``(N, *sample_shape)``, float32.
        y_train: class indices of the training split, shape ``(N,)``, int64.
        x_test: inputs of the held-out split, same sample shape as ``x_train``.
        y_test: class indices of the held-out split.
        name: where the data came from (``"mnist1d"``, ``"arrays"``, a file name ...).
        info: free-form provenance (generator options, standardisation, split seed).
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    name: str = "data"
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def train(self) -> DataSplit:
        """The training split as ``(x, y)``."""
        return DataSplit(self.x_train, self.y_train)

    @property
    def test(self) -> DataSplit:
        """The held-out split as ``(x, y)``."""
        return DataSplit(self.x_test, self.y_test)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one input sample (without the batch dimension)."""
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        """Number of classes: one more than the largest label in either split."""
        return int(max(self.y_train.max().item(), self.y_test.max().item())) + 1

    def reshaped(self, sample_shape: tuple[int, ...]) -> TrainTestData:
        """The same data with every sample reshaped to ``sample_shape`` (same element count).

        Args:
            sample_shape: the new per-sample shape, e.g. ``(1, 40)`` for a 1-D CNN.

        Returns:
            A new :class:`TrainTestData` sharing storage with this one where possible.
        """
        return replace(
            self,
            x_train=self.x_train.reshape(len(self.x_train), *sample_shape),
            x_test=self.x_test.reshape(len(self.x_test), *sample_shape),
        )

    def describe(self) -> str:
        """One line: name, split sizes, sample shape and class count."""
        return (
            f"{self.name}: {len(self.x_train)} train / {len(self.x_test)} test samples of shape "
            f"{self.sample_shape}, {self.num_classes} classes"
        )


def as_inputs(values: Any, what: str) -> torch.Tensor:
    """Convert an array-like of inputs to a float32 tensor with a batch dimension.

    Args:
        values: numpy array, torch tensor or nested sequence.
        what: name used in error messages (``"x_train"``).

    Returns:
        A float32 tensor of rank >= 2.

    Raises:
        DataError: the values are not numeric, have no per-sample dimension, hold NaN or
            infinite values, or values beyond float32's range.
    """
    try:
        array = (
            values.detach().cpu().numpy()
            if isinstance(values, torch.Tensor)
            else np.asarray(values)
        )
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what} cannot be read as a numeric array: {exc}") from exc
    if array.dtype.kind not in "biuf":
        raise DataError(f"{what} must be numeric, got dtype {array.dtype}")
    if array.ndim < 2:
        raise DataError(
            f"{what} has shape {array.shape}; inputs need a batch dimension first and at least "
            f"one feature dimension, e.g. (N, features)"
        )
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            bad = int(array.size - np.count_nonzero(finite))
            sample = int(np.argwhere(~finite)[0][0])
            raise DataError(
                f"{what} holds {bad} NaN or infinite value{'s' if bad > 1 else ''} (the first in sample "
                f"{sample}); training and scoring need finite inputs: remove or impute those samples"
            )
    with np.errstate(over="ignore", invalid="ignore"):  # a float64 value beyond float32's range
        converted = np.ascontiguousarray(array, dtype=np.float32)
    if array.dtype.kind == "f" and array.dtype.itemsize > 4:
        overflow = ~np.isfinite(converted)
        if overflow.any():
            sample = int(np.argwhere(overflow)[0][0])
            raise DataError(
                f"{what} holds values beyond float32's range (e.g. {array[tuple(np.argwhere(overflow)[0])]:.3g} "
                f"in sample {sample}); n2nonnx computes in float32: rescale the data"
            )
    return torch.from_numpy(converted)


def as_labels(values: Any, what: str, count: int) -> torch.Tensor:
    """Convert an array-like of class indices to an int64 tensor of shape ``(count,)``.

    Args:
        values: numpy array, torch tensor or sequence of integers (shape ``(N,)`` or ``(N, 1)``).
        what: name used in error messages (``"y_train"``).
        count: number of samples the matching inputs have.

    Returns:
        An int64 tensor of shape ``(count,)``.

    Raises:
        DataError: wrong shape, wrong length, non-integral or negative labels.
    """
    array = (
        values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    )
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise DataError(
            f"{what} has shape {array.shape}; labels must be class indices of shape (N,) "
            f"(one-hot labels: pass labels.argmax(1))"
        )
    if len(array) != count:
        raise DataError(f"{what} has {len(array)} labels but the inputs have {count} samples")
    if array.dtype.kind == "b":
        raise DataError(
            f"{what} holds booleans; labels must be integer class indices (for two classes pass "
            f"{what}.astype(int): False -> 0, True -> 1)"
        )
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise DataError(f"{what} must hold integer class indices, got non-integral floats")
    elif array.dtype.kind not in "iu":
        raise DataError(f"{what} must hold integer class indices, got dtype {array.dtype}")
    if count and array.min() < 0:
        raise DataError(f"{what} has negative labels (min {array.min()}); use indices 0..C-1")
    return torch.from_numpy(array.astype(np.int64))


def make_data(
    x_train: Any,
    y_train: Any,
    x_test: Any,
    y_test: Any,
    *,
    name: str = "data",
    info: dict[str, Any] | None = None,
) -> TrainTestData:
    """Build a checked :class:`TrainTestData` from four array-likes.

    Args:
        x_train: training inputs, ``(N, ...)`` with one row per sample.
        y_train: training labels, ``N`` integer class indices.
        x_test: held-out inputs, with the same sample shape as ``x_train``.
        y_test: held-out labels, one integer class index per row of ``x_test``.
        name: where the data came from, for messages.
        info: provenance to keep with the data.

    Returns:
        The data set as float32 inputs and int64 labels.

    Raises:
        DataError: a split is empty, mis-shaped, or the two splits disagree on sample shape.
    """
    train_x = as_inputs(x_train, "x_train")
    test_x = as_inputs(x_test, "x_test")
    if len(train_x) == 0 or len(test_x) == 0:
        raise DataError(
            f"{name}: empty split (x_train has {len(train_x)} samples, x_test {len(test_x)})"
        )
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataError(
            f"{name}: x_train samples have shape {tuple(train_x.shape[1:])} but x_test samples "
            f"have shape {tuple(test_x.shape[1:])}; both splits need the same sample shape"
        )
    return TrainTestData(
        train_x,
        as_labels(y_train, "y_train", len(train_x)),
        test_x,
        as_labels(y_test, "y_test", len(test_x)),
        name=name,
        info=dict(info or {}),
    )


def holdout_split(
    x: Any, y: Any, *, test_fraction: float = 0.2, seed: int = 0, name: str = "data"
) -> TrainTestData:
    """Split one set of samples into train and held-out parts, reproducibly.

    Args:
        x: inputs, shape ``(N, ...)``.
        y: class indices, shape ``(N,)``.
        test_fraction: share of samples held out (0 < f < 1).
        seed: seed of the permutation.
        name: where the data came from, for messages.

    Returns:
        The split data set; ``info["holdout"]`` records the fraction and seed.
    """
    inputs = as_inputs(x, "x")
    labels = as_labels(y, "y", len(inputs))
    if len(inputs) < 2:
        raise DataError(f"{name}: need at least 2 samples to hold some out, got {len(inputs)}")
    order = np.random.default_rng(seed).permutation(len(inputs))
    n_test = min(max(1, round(len(inputs) * test_fraction)), len(inputs) - 1)
    test_idx, train_idx = torch.from_numpy(order[:n_test]), torch.from_numpy(order[n_test:])
    return make_data(
        inputs[train_idx],
        labels[train_idx],
        inputs[test_idx],
        labels[test_idx],
        name=name,
        info={"holdout": {"test_fraction": test_fraction, "seed": seed}},
    )


def standardized(data: TrainTestData, eps: float = 1e-8) -> TrainTestData:
    """Z-score every input feature with the mean and standard deviation of the training split.

    Args:
        data: the data set; the held-out split is scaled with the *training* statistics.
        eps: floor of the standard deviation (constant features stay finite).

    Returns:
        A new data set; ``info["standardized"]`` is True.
    """
    mean = data.x_train.mean(dim=0, keepdim=True)
    std = data.x_train.std(dim=0, correction=0, keepdim=True).clamp_min(eps)
    return replace(
        data,
        x_train=(data.x_train - mean) / std,
        x_test=(data.x_test - mean) / std,
        info={**data.info, "standardized": True},
    )
