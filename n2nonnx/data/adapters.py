"""Adapters from user data (arrays, ``.npz`` files, torch Datasets) to :class:`TrainTestData`."""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from n2nonnx.data.dataset import TrainTestData, holdout_split, make_data
from n2nonnx.data.memory import check_fits_memory, format_bytes
from n2nonnx.errors import DataError

SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")


def from_arrays(arrays: Any, *, seed: int = 0, test_fraction: float = 0.2) -> TrainTestData:
    """Data from in-memory arrays (numpy arrays, torch tensors or nested lists).

    Args:
        arrays: one of
            ``(x_train, y_train, x_test, y_test)``;
            ``((x_train, y_train), (x_test, y_test))``;
            a mapping with the keys ``x_train, y_train, x_test, y_test``;
            ``(x, y)``: one set, of which ``test_fraction`` is held out with ``seed``.
        seed: seed of the hold-out split when only ``(x, y)`` is given.
        test_fraction: share held out when only ``(x, y)`` is given.

    Returns:
        The checked data set.

    Raises:
        DataError: the structure is none of the above, or an array is mis-shaped.
    """
    if isinstance(arrays, Mapping):
        return _from_mapping(arrays, "arrays", [str(key) for key in arrays])
    if not isinstance(arrays, Sequence) or isinstance(arrays, str | bytes):
        raise DataError(_structure_help(type(arrays).__name__))
    parts = list(arrays)
    if len(parts) == 4:
        return make_data(*parts, name="arrays")
    if len(parts) == 2 and all(_is_pair(part) for part in parts):
        (x_train, y_train), (x_test, y_test) = parts
        return make_data(x_train, y_train, x_test, y_test, name="arrays")
    if len(parts) == 2:
        return holdout_split(
            parts[0], parts[1], test_fraction=test_fraction, seed=seed, name="arrays"
        )
    raise DataError(_structure_help(f"a sequence of {len(parts)} items"))


def _is_pair(item: Any) -> bool:
    return isinstance(item, tuple | list) and len(item) == 2


def _structure_help(got: str) -> str:
    return (
        f"cannot read training data from {got}; pass (x_train, y_train, x_test, y_test), "
        f"((x_train, y_train), (x_test, y_test)), (x, y), a dict with keys "
        f"{', '.join(SPLIT_KEYS)}, an .npz path, a torch Dataset or a built-in name"
    )


def _from_mapping(arrays: Mapping[str, Any], source: str, found: list[str]) -> TrainTestData:
    missing = [key for key in SPLIT_KEYS if key not in arrays]
    if missing:
        raise DataError(
            f"{source} has no array {missing[0]!r} (found: {', '.join(sorted(found)) or 'none'}); "
            f"training data needs the keys {', '.join(SPLIT_KEYS)}"
        )
    return make_data(*(arrays[key] for key in SPLIT_KEYS), name=source)


def from_npz(path: str | Path) -> TrainTestData:
    """Data from an ``.npz`` file holding ``x_train, y_train, x_test, y_test``.

    Args:
        path: the file.

    Returns:
        The checked data set, named after the file.

    Raises:
        DataError: the file is missing, unreadable or not an .npz archive, a key is
            missing, an array header claims more data than the file holds or than memory
            can, or an array is mis-shaped (the message names the key).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist")
    if not zipfile.is_zipfile(path):
        raise DataError(
            f"cannot read {str(path)!r}: it is not an .npz archive "
            f"({'an empty file' if path.stat().st_size == 0 else 'not a zip file'}); "
            "save the four arrays with numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"
        )
    check_npz_sizes(path, SPLIT_KEYS)
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.files)
            arrays = {key: archive[key] for key in SPLIT_KEYS if key in keys}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"cannot read {str(path)!r} as an .npz archive: {' '.join(str(exc).split())}"
        ) from None
    return _from_mapping(arrays, path.name, keys)


def check_npz_sizes(path: Path, keys: Sequence[str] | None = None) -> None:
    """Read the array headers of an .npz archive and refuse impossible sizes before loading.

    Args:
        path: the archive.
        keys: the arrays that will be loaded (others are not read); None: every array.

    Raises:
        DataError: a header is unreadable, claims more bytes than its member holds (a
            truncated or forged file), or the arrays together exceed the available memory.
    """
    total = 0
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                key = info.filename.removesuffix(".npy")
                if keys is not None and key not in keys:
                    continue
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    read_header = {
                        (1, 0): np.lib.format.read_array_header_1_0,
                        (2, 0): np.lib.format.read_array_header_2_0,
                    }.get(version)
                    if read_header is None:
                        raise ValueError(
                            f"array {key!r} has .npy format version {version}; use numpy.savez"
                        )
                    shape, _, dtype = read_header(member)
                    header = member.tell()
                nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if nbytes > info.file_size - header:
                    raise DataError(
                        f"{path.name}: array {key!r} claims shape {shape} ({format_bytes(nbytes)}) but the file "
                        f"holds {format_bytes(info.file_size - header)} for it; the file is truncated or "
                        "damaged, write it again with numpy.savez"
                    )
                total += nbytes
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"cannot read {str(path)!r} as an .npz archive: {' '.join(str(exc).split())}"
        ) from None
    # float32 copies of the inputs are made as well: count the arrays twice
    check_fits_memory(2 * total, f"{path.name}", "use a smaller data file")


def from_torch(dataset: Any, *, seed: int = 0, test_fraction: float = 0.2) -> TrainTestData:
    """Data from torch Datasets whose items are ``(input, label)`` pairs.

    The items are read once and stacked into tensors (the data must fit in memory).

    Args:
        dataset: a Dataset (``test_fraction`` of it is held out with ``seed``) or a pair
            ``(train_dataset, test_dataset)``.
        seed: seed of the hold-out split for a single Dataset.
        test_fraction: share held out for a single Dataset.

    Returns:
        The checked data set.
    """
    if isinstance(dataset, tuple | list):
        train_x, train_y = _stack(dataset[0], "train dataset")
        test_x, test_y = _stack(dataset[1], "test dataset")
        return make_data(train_x, train_y, test_x, test_y, name="torch datasets")
    x, y = _stack(dataset, "dataset")
    return holdout_split(x, y, test_fraction=test_fraction, seed=seed, name="torch dataset")


def is_torch_dataset(value: Any) -> bool:
    """True for a torch Dataset or a pair of them."""
    if isinstance(value, tuple | list) and len(value) == 2:
        return all(isinstance(item, torch.utils.data.Dataset) for item in value)
    return isinstance(value, torch.utils.data.Dataset)


def _stack(dataset: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        size = len(dataset)
    except TypeError as exc:
        raise DataError(f"the {what} has no length; iterable datasets are not supported") from exc
    if size == 0:
        raise DataError(f"the {what} is empty")
    inputs, labels = [], []
    for index in range(size):
        item = dataset[index]
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise DataError(
                f"item {index} of the {what} is {type(item).__name__}; items must be (input, label)"
            )
        inputs.append(torch.as_tensor(np.asarray(item[0]), dtype=torch.float32))
        label = torch.as_tensor(item[1])
        if label.numel() != 1:
            raise DataError(
                f"item {index} of the {what} has a label of shape {tuple(label.shape)}; "
                f"labels must be single class indices"
            )
        labels.append(int(label.reshape(-1)[0]))
    shapes = {tuple(tensor.shape) for tensor in inputs}
    if len(shapes) != 1:
        raise DataError(f"the {what} has inputs of different shapes: {sorted(shapes)[:3]}")
    return torch.stack(inputs), torch.tensor(labels, dtype=torch.int64)
