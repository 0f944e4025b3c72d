"""Where generated data sets are cached on disk, and atomic reads / writes of the cache files."""

from __future__ import annotations

import os
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np

CACHE_ENV = "N2NONNX_CACHE"


def cache_dir() -> Path:
    """Directory for generated data sets.

    Returns:
        ``$N2NONNX_CACHE`` if set, else ``$XDG_CACHE_HOME/n2nonnx``, else ``~/.cache/n2nonnx``.
        The directory is not created here.
    """
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "n2nonnx"


def load_cached(file_name: str) -> dict[str, np.ndarray] | None:
    """Arrays of a cached ``.npz`` file, or ``None`` when it is absent or unreadable.

    Args:
        file_name: name of the file inside :func:`cache_dir`.
    """
    path = cache_dir() / file_name
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile):
        return None  # a truncated or foreign file: regenerate and overwrite it


def store_cached(file_name: str, arrays: dict[str, np.ndarray]) -> Path | None:
    """Write arrays to the cache atomically (temporary file, then rename).

    A cache that cannot be written only costs time, so failures warn instead of raising.

    Args:
        file_name: name of the file inside :func:`cache_dir`.
        arrays: what to store.

    Returns:
        The path written, or ``None`` if the cache directory is not writable.
    """
    directory = cache_dir()
    tmp_name = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle, tmp_name = tempfile.mkstemp(dir=directory, suffix=".npz.tmp")
        with os.fdopen(handle, "wb") as stream:
            # numpy's stub lets **arrays fill the bool allow_pickle, so mypy rejects any dict
            np.savez(stream, **arrays)  # type: ignore[arg-type]  # numpy stub, see above
        os.replace(tmp_name, directory / file_name)
    except OSError as exc:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)
        warnings.warn(f"could not cache {file_name} in {directory}: {exc}", stacklevel=2)
        return None
    return directory / file_name
