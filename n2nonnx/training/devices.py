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
    """The torch dtype inputs are fed in for an ONNX input element type.

    Float32/64 inputs keep their type; integer inputs (token ids fed to an embedding Gather)
    are fed as int64 and get no gradient; UNDEFINED means float32.

    Raises:
        DataError: a half-precision input (such a model trains badly in fp16: export it in
            float32; deployment can store fp16 weights), or a type that is neither.
    """
    if elem_type == onnx.TensorProto.UNDEFINED:
        return torch.float32
    np_dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    name = onnx.TensorProto.DataType.Name(elem_type)
    if np_dtype.kind in "iu":
        return torch.int64
    if np_dtype.kind != "f" or np_dtype.itemsize < 4:
        raise DataError(
            f"the model input has type {name}; training needs a float32 (or integer token) input: "
            "export the model in float32 (n2nonnx deploy --weights-fp16 stores half-precision weights)"
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
        raise InvalidArgumentError(
            f"device={device!r} cannot train (it holds no data or is not supported); "
            "use cpu or cuda"
        )
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
