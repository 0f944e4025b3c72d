"""The unit rule of an ONNX op: how it maps, mixes, removes and scales units, in one record.

A *unit* is a channel or neuron a layer produces. Every stage that reasons about units
asks this table instead of keeping its own list of ops: the tracer (:mod:`n2nonnx.graph.trace`)
follows units through an op with :attr:`UnitRule.trace`, dead-unit analysis and
reachability treat an op that :attr:`~UnitRule.mixes` units as all-to-all, the removal
transform (:func:`n2nonnx.units.remove_units`) rewrites the op with
:attr:`~UnitRule.remove` (and :attr:`~UnitRule.check` says beforehand, with a reason,
where it cannot), its inverse (:func:`n2nonnx.units.pad_units`, zero units appended)
with :attr:`~UnitRule.pad`, and SynFlow's exact rescaling reads :attr:`~UnitRule.scale`. One file
per op family registers its rules with :func:`register`; ``n2nonnx.graph.units``
imports them all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import onnx

from n2nonnx.graph.index import GraphIndex


@dataclass(frozen=True)
class Trace:
    """Where an origin's units are in one tensor.

    Attributes:
        tensor: the tensor.
        axis: the axis that holds the units (None: unknown).
        unit_map: for each position along ``axis``, the origin unit found there (-1: none);
            None where it could not be followed.
        via: op types crossed since the origin, in order.
        mixed: an op on the way made positions depend on other units (see :attr:`UnitRule.mixes`).
    """

    tensor: str
    axis: int | None
    unit_map: np.ndarray | None
    via: tuple[str, ...]
    mixed: bool = False


#: (output tensor, its unit axis or None, its unit map or None) for each output a rule follows.
Outgoing = list[tuple[str, int | None, np.ndarray | None]]
TraceFn = Callable[[GraphIndex, onnx.NodeProto, Trace], Outgoing]
#: Why units arriving as ``trace`` cannot be removed through the node (None: they can).
CheckFn = Callable[[GraphIndex, onnx.NodeProto, Trace], "str | None"]
#: Whether the node makes positions along the traced axis depend on other units.
MixesFn = Callable[[GraphIndex, onnx.NodeProto, Trace], bool]


@dataclass(frozen=True)
class Layout:
    """Which original positions along ``axis`` a tensor still holds (``kept``, ascending)."""

    axis: int
    kept: np.ndarray
    size: int

    @property
    def vanished(self) -> bool:
        """Every position is gone: the tensor contributes nothing."""
        return len(self.kept) == 0


class UnitEditor(Protocol):
    """What a removal rule may use of the removal pass (:class:`n2nonnx.units.removal.Editor`)."""

    index: GraphIndex
    states: dict[str, Layout]
    values: dict[str, np.ndarray]
    nodes: list[onnx.NodeProto]
    layers: dict[str, Any]

    def value(self, name: str) -> np.ndarray:
        """The (possibly already rewritten) value of a constant."""

    def is_constant(self, name: str) -> bool:
        """True for an initializer or a constant the pass created."""

    def set_constant(self, node: onnx.NodeProto, slot: int, value: np.ndarray) -> None:
        """Give input ``slot`` of ``node`` a new constant value."""

    def rank(self, name: str) -> int:
        """The rank of a tensor (raises where unknown)."""

    def size(self, name: str, axis: int) -> int | None:
        """A tensor's static size along ``axis``, or None."""

    def slice_broadcast(
        self, node: onnx.NodeProto, slot: int, out_rank: int, state: Layout
    ) -> None:
        """Slice a constant operand of a broadcasting op along the units' axis."""

    def select(self, tensor: str, axis: int, positions: np.ndarray, base: str) -> str:
        """Insert a Gather keeping ``positions`` of ``tensor`` along ``axis``; its output."""


RemoveFn = Callable[[UnitEditor, onnx.NodeProto, str], None]


@dataclass(frozen=True)
class Padding:
    """Where a padded tensor's positions along ``axis`` come from.

    Attributes:
        axis: the axis that grew.
        source: for each position of the padded tensor, the original position it holds,
            or -1 for an added (zero) unit.
        size: the original size along ``axis``.
    """

    axis: int
    source: np.ndarray
    size: int

    @property
    def added(self) -> np.ndarray:
        """The positions of the added units."""
        return np.flatnonzero(self.source < 0)

    def grow(self, array: np.ndarray, axis: int, fill: float = 0.0) -> np.ndarray:
        """``array`` (original size along ``axis``) laid out like this tensor, ``fill`` where added."""
        picked = np.take(array, np.maximum(self.source, 0), axis=axis)
        shape = [1] * array.ndim
        shape[axis] = len(self.source)
        added = (self.source < 0).reshape(shape)
        return np.where(added, np.asarray(fill, dtype=array.dtype), picked).astype(array.dtype)


class PadEditor(Protocol):
    """What a padding rule may use of the padding pass (:class:`n2nonnx.units.padding.Padder`)."""

    index: GraphIndex
    states: dict[str, Padding]
    nodes: list[onnx.NodeProto]

    def value(self, name: str) -> np.ndarray:
        """The (possibly already rewritten) value of a constant."""

    def is_constant(self, name: str) -> bool:
        """True for an initializer or a constant the pass created."""

    def set_constant(self, node: onnx.NodeProto, slot: int, value: np.ndarray) -> None:
        """Give input ``slot`` of ``node`` a new constant value."""

    def rank(self, name: str) -> int:
        """The rank of a tensor (raises where unknown)."""

    def refuse(self, node: onnx.NodeProto, why: str) -> None:
        """Raise the error that says why the padding cannot pass ``node`` exactly."""


#: Rewrites a node that padded units reach, so that they stay without effect; raises
#: (through :meth:`PadEditor.refuse`) where it cannot.
PadFn = Callable[[PadEditor, onnx.NodeProto, str], None]

#: How a scale factor passes through an op (SynFlow's exact rescaling): the listed input
#: slots share the output's factor (``ALL``: every input), ``PRODUCT``: the output's factor
#: is the product of its inputs', ``None``: the op is not positively homogeneous.
ALL = "all"
PRODUCT = "product"
Scale = tuple[int, ...] | str | None


@dataclass(frozen=True)
class UnitRule:
    """What one op does to units.

    Attributes:
        op: the op type.
        trace: follows units from one input to the outputs; None for ops whose outputs
            carry no units (shape metadata: ``Shape``, ``Size`` ...).
        data_inputs: the input slots that carry data (None: every input); units arriving
            elsewhere (a shape, indices) are not followed.
        mixes: whether positions along the traced axis come to depend on other units
            (a LayerNorm over the unit axis): a bool, or a function of the node and trace.
        remove: rewrites the node in the removal pass; None: units cannot pass.
        check: says, before any removal, why units arriving as a trace cannot be removed
            through the node (None: defaults to "they can" where ``remove`` exists).
        scale: how a scale factor passes through the op (see :data:`ALL`, :data:`PRODUCT`).
        family: the family file that registered the rule (for messages and tests).
        pad: rewrites the node in the padding pass (zero units appended to a layer); None:
            padded units cannot pass.
    """

    op: str
    trace: TraceFn | None
    data_inputs: tuple[int, ...] | None = None
    mixes: bool | MixesFn = False
    remove: RemoveFn | None = None
    check: CheckFn | None = None
    scale: Scale = None
    family: str = ""
    pad: PadFn | None = None

    def mixes_units(self, index: GraphIndex, node: onnx.NodeProto, trace: Trace) -> bool:
        """Whether this node makes the traced positions depend on other units."""
        return self.mixes(index, node, trace) if callable(self.mixes) else bool(self.mixes)

    def carries(self, node: onnx.NodeProto, tensor: str) -> bool:
        """Whether ``tensor`` enters ``node`` through a data input."""
        if self.data_inputs is None:
            return tensor in node.input
        return any(s < len(node.input) and node.input[s] == tensor for s in self.data_inputs)

    def removal_blocker(self, index: GraphIndex, node: onnx.NodeProto, trace: Trace) -> str | None:
        """Why units arriving as ``trace`` cannot be removed through this node, or None."""
        name = node.name or self.op
        if not self.carries(node, trace.tensor):
            return f"they reach a non-data input of {self.op} {name!r}"
        if self.trace is None:
            return f"{self.op} {name!r} reads their count"
        if self.remove is None:
            return f"{self.op} {name!r} has no removal rule"
        if self.mixes_units(index, node, trace):
            return f"{self.op} {name!r} mixes units along their axis"
        return self.check(index, node, trace) if self.check is not None else None


RULES: dict[str, UnitRule] = {}


def register(
    ops: Any,
    trace: TraceFn | None,
    *,
    family: str,
    data_inputs: tuple[int, ...] | None = None,
    mixes: bool | MixesFn = False,
    remove: RemoveFn | None = None,
    check: CheckFn | None = None,
    scale: Scale | dict[str, Scale] = None,
    pad: PadFn | None = None,
) -> None:
    """Register one rule for each op type in ``ops`` (a name or an iterable of names).

    Args:
        ops: the op types.
        trace: see :class:`UnitRule`.
        family: the registering family (module) name.
        data_inputs: see :class:`UnitRule`.
        mixes: see :class:`UnitRule`.
        remove: see :class:`UnitRule`.
        check: see :class:`UnitRule`.
        scale: see :class:`UnitRule`; a dict gives each op its own (absent ops: None).
        pad: see :class:`UnitRule`.

    Raises:
        ValueError: an op already has a rule.
    """
    for op in [ops] if isinstance(ops, str) else sorted(ops):
        if op in RULES:
            raise ValueError(f"unit rule for {op} registered twice ({RULES[op].family}, {family})")
        own_scale = scale.get(op) if isinstance(scale, dict) else scale
        RULES[op] = UnitRule(op, trace, data_inputs, mixes, remove, check, own_scale, family, pad)


def rule_for(op: str) -> UnitRule | None:
    """The rule of op type ``op``, or None for an op no family knows."""
    return RULES.get(op)


def size_along(index: GraphIndex, tensor: str, axis: int | None) -> int | None:
    """A tensor's static size along ``axis`` (None: unknown axis, shape or size)."""
    shape = index.shape(tensor)
    if shape is None or axis is None or axis >= len(shape):
        return None
    size = shape[axis]
    return size if isinstance(size, int) else None


def static_dims(shape) -> list[int] | None:
    """A shape with a symbolic batch set to 1, or None where another size is unknown."""
    if shape is None:
        return None
    dims = [1 if i == 0 and not isinstance(d, int) else d for i, d in enumerate(shape)]
    return dims if all(isinstance(d, int) for d in dims) else None


def unknown_trace(index: GraphIndex, node: onnx.NodeProto, trace: Trace) -> Outgoing:
    """An op no rule knows: the wiring is kept, the unit map lost."""
    in_rank = index.rank(trace.tensor)
    result: Outgoing = []
    for output in node.output:
        same_rank = in_rank is not None and index.rank(output) == in_rank
        result.append((output, trace.axis if same_rank else None, None))
    return result
