"""Where and how reproducibly training runs: devices, dtypes and seeded RNG state."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import onnx
import torch

from n2nonnx.errors import DataError, InvalidArgumentError


def torch_dtype(elem_type: int) -> torch.dtype:
    """The torch dtype of an ONNX input element type (float types only; UNDEFINED: float32).

    Raises:
        DataError: the input is not a floating-point type.
    """
    if elem_type == onnx.TensorProto.UNDEFINED:
        return torch.float32
    np_dtype = onnx.helper.tensor_dtype_to_np_dtype(elem_type)
    if np.dtype(np_dtype).kind != "f":
        raise DataError(
            f"the model input has type {onnx.TensorProto.DataType.Name(elem_type)}; "
            f"training supports float inputs only"
        )
    return torch.from_numpy(np.zeros(0, dtype=np_dtype)).dtype


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device that exists here.

    Raises:
        InvalidArgumentError: not a device name, or CUDA asked for and not available.
    """
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidArgumentError(
            f"device={device!r} is not a torch device ('cpu', 'cuda')"
        ) from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgumentError(f"device={device!r} requested but CUDA is not available here")
    if resolved.type not in ("cpu", "cuda", "mps", "xpu"):
        raise InvalidArgumentError(f"device={device!r} cannot train (it holds no data or is not supported); "
                                   "use cpu or cuda")
    return resolved


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch, numpy and Python RNGs for the block, and restore the caller's states."""
    devices = [device.index or 0] if device.type == "cuda" else []
    numpy_state, python_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(numpy_state)
            random.setstate(python_state)
