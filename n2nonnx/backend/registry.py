"""The op registry: ONNX (domain, op_type, since_version) -> a builder of a torch callable.

A *builder* receives a :class:`NodeSpec` once, at module construction, reads the node's
attributes and constant inputs, and returns a *kernel*: a plain function of the node's
runtime input tensors (``None`` for an omitted optional input) that returns one tensor or
a tuple of tensors (one per node output, extra trailing ones are ignored).

Builders are registered with :func:`register_op`; a model's opset resolves to the highest
registered version at or below it (so an op unchanged since opset 13 serves opset 21 too).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper

from n2nonnx.errors import UnsupportedOpError

Kernel = Callable[..., Any]
Builder = Callable[["NodeSpec"], Kernel]

# (domain, op_type) -> sorted list of (since_version, builder)
_REGISTRY: dict[tuple[str, str], list[tuple[int, Builder]]] = {}
_LOADED = False


def _normal_domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


def register_op(op_type: str, since: int = 1, domain: str = "") -> Callable[[Builder], Builder]:
    """Decorator registering a builder for one op version.

    Args:
        op_type: the ONNX op type, e.g. ``"Conv"``.
        since: the opset version from which this builder's semantics apply.
        domain: the op domain (``""`` and ``"ai.onnx"`` are the same).

    Returns:
        The decorator; it returns the builder unchanged.

    Raises:
        ValueError: a builder is already registered for the same (domain, op_type, since).
    """
    key = (_normal_domain(domain), op_type)

    def decorate(builder: Builder) -> Builder:
        versions = _REGISTRY.setdefault(key, [])
        if any(v == since for v, _ in versions):
            raise ValueError(f"duplicate converter for {key[0] or 'ai.onnx'}::{op_type} since opset {since}")
        bisect.insort(versions, (since, builder), key=lambda item: item[0])
        return builder

    return decorate


def _load_ops() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        from n2nonnx.backend import ops  # noqa: F401  (import fills the registry)


def supported_ops() -> dict[str, list[int]]:
    """Every op the backend can execute.

    Returns:
        ``"op_type"`` (or ``"domain::op_type"`` outside the default domain) -> the sorted
        opset versions that have their own converter.
    """
    _load_ops()
    table = {}
    for (domain, op_type), versions in sorted(_REGISTRY.items()):
        table[f"{domain}::{op_type}" if domain else op_type] = [v for v, _ in versions]
    return table


def resolve(op_type: str, domain: str, opset: int, node_name: str = "") -> Builder:
    """The builder for an op at a model's opset: the highest registered version <= opset.

    Args:
        op_type: ONNX op type.
        domain: op domain.
        opset: the model's opset version for that domain.
        node_name: for the error message.

    Returns:
        The builder.

    Raises:
        UnsupportedOpError: no converter for this op, or only ones newer than ``opset``.
    """
    _load_ops()
    dom = _normal_domain(domain)
    versions = _REGISTRY.get((dom, op_type), [])
    usable = [b for v, b in versions if v <= opset]
    if not usable:
        known = f" (converters exist only for opsets {[v for v, _ in versions]})" if versions else ""
        raise UnsupportedOpError(
            f"node {node_name!r} (op {op_type}, domain {dom or 'ai.onnx'!r}, opset {opset}) has no "
            f"converter{known}; list the supported ops with n2nonnx.backend.supported_ops()"
        )
    return usable[-1]


@dataclass
class NodeSpec:
    """What a builder may read about one node, at module construction.

    Attributes:
        node: the NodeProto.
        opset: the model's opset for the node's domain.
        constants: tensor name -> value for tensors known at build time that are not
            trainable (integer / shape initializers, Constant outputs). Builders use it for
            shape-like inputs (axes, pads, shapes) to avoid reading tensors every forward.
        is_training: returns the owning module's train/eval flag at run time.
    """

    node: onnx.NodeProto
    opset: int
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    is_training: Callable[[], bool] = lambda: False
    _attrs: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        """The node name (may be empty)."""
        return self.node.name

    @property
    def op_type(self) -> str:
        """The node's op type."""
        return self.node.op_type

    @property
    def inputs(self) -> Sequence[str]:
        """The node's input names ('' for an omitted optional input)."""
        return self.node.input

    @property
    def outputs(self) -> Sequence[str]:
        """The node's output names."""
        return self.node.output

    @property
    def attrs(self) -> dict[str, Any]:
        """Attribute name -> Python value (strings decoded, tensors as numpy arrays)."""
        if self._attrs is None:
            parsed = {}
            for attr in self.node.attribute:
                value = helper.get_attribute_value(attr)
                if isinstance(value, bytes):
                    value = value.decode()
                elif isinstance(value, onnx.TensorProto):
                    value = onnx.numpy_helper.to_array(value)
                elif isinstance(value, list) and value and isinstance(value[0], bytes):
                    value = [v.decode() for v in value]
                parsed[attr.name] = value
            self._attrs = parsed
        return self._attrs

    def attr(self, name: str, default: Any = None) -> Any:
        """One attribute's value, or ``default`` when the node does not set it."""
        return self.attrs.get(name, default)

    def has_input(self, index: int) -> bool:
        """True if optional input ``index`` is present."""
        return index < len(self.node.input) and self.node.input[index] != ""

    def const(self, index: int) -> np.ndarray | None:
        """The build-time value of input ``index``, or None if absent or only known at run time."""
        if not self.has_input(index):
            return None
        return self.constants.get(self.node.input[index])

    def is_dynamic(self, index: int) -> bool:
        """True if input ``index`` is present and its value is only known at run time."""
        return self.has_input(index) and self.node.input[index] not in self.constants
