"""The records builders work with: :class:`NodeSpec` (one node at build time), ``Kernel``, ``Builder``.

A *builder* receives a :class:`NodeSpec` once, at module construction, reads the node's
attributes and constant inputs, and returns a *kernel*: a plain function of the node's
runtime input tensors (``None`` for an omitted optional input) that returns one tensor or
a tuple of tensors (one per node output, extra trailing ones are ignored). Builders are
registered with :func:`n2nonnx.backend.registry.register_op`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper

from n2nonnx.backend.schemas import active_version

Kernel = Callable[..., Any]
Builder = Callable[["NodeSpec"], Kernel]


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
    def schema_version(self) -> int | None:
        """The node's active ONNX schema version at the model's opset (None for a custom op)."""
        return active_version(self.node.op_type, self.node.domain, self.opset)

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
