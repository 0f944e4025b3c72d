"""Lazy package exports: a name is imported from its module on first use.

Packages whose modules import torch (training, the top-level verbs) export their names
this way, so that importing the package, or a light module inside it (the CLI reads
``n2nonnx.training.config``), does not import torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, exports: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` that import ``exports`` on demand.

    Args:
        package: the package's ``__name__`` (for error messages and caching).
        exports: exported name -> the module that defines it.

    Returns:
        The two module-level functions to assign in the package's ``__init__``.
    """
    import sys

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
