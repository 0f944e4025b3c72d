"""Op converters, one module per op family; importing this package fills the registry."""

from __future__ import annotations

from n2nonnx.backend.ops import (  # noqa: F401
    activations,
    conv,
    dropout,
    elementwise,
    generators,
    indexing,
    linear,
    ml,
    norm,
    pad,
    pooling,
    reduce,
    resize,
    shape,
)
