"""Exact power-of-two rescaling that keeps SynFlow's positive network in float32 range.

SynFlow feeds ones through the network with every parameter replaced by ``|theta|``; on
deep networks the flow is a product of many layer gains and leaves float32's range.
Scaling is exact when it scales every tensor of the graph by a constant: a Conv / Gemm /
MatMul output then scales by the product of its inputs' factors, a bias must take the
output's factor, the two sides of an Add (a residual) the same factor, a BatchNorm's mean
and shift its input's (its ``gamma`` is free, its variance fixed because of ``epsilon``),
and an op that is not positively homogeneous (Softmax, LayerNorm's input, Sigmoid, an op
this module does not know) must see its input unscaled, as must a Clip with bounds (the
backend reads constant bounds when it builds the kernel, so they cannot be scaled). Then ``R = sum(output)`` scales
by one factor ``2**E`` and so does every score ``|w * dR/dw|``: the ranking is the same.

:class:`ScalePlan` solves those constraints once per graph (each one eliminates one
initializer's exponent, biases and BatchNorm parameters first), then each round picks
the remaining exponents so that every layer's estimated output is about 1. Factors are
powers of two, so scaling changes no bit of a mantissa.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

import numpy as np
import onnx

from n2nonnx.graph.units import ALL, PRODUCT, rule_for
from n2nonnx.graph.units.table import Scale

logger = logging.getLogger(__name__)

_FLOAT_TYPES = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.BFLOAT16,
}


def _scale(op: str) -> Scale:
    """How a scale factor passes through ``op``: its unit rule's (:mod:`n2nonnx.graph.units`)."""
    rule = rule_for(op)
    return rule.scale if rule is not None else None


def _shares_scale(op: str) -> bool:
    """Some inputs of ``op`` share its output's factor."""
    scale = _scale(op)
    return scale == ALL or isinstance(scale, tuple)


# ops (by name prefix) whose outputs are indices or booleans, never scaled
_NOT_SCALED_PREFIXES = ("Arg", "Equal", "Less", "Greater", "Not", "And", "Or")


class InfeasibleScaling(Exception):
    """The graph admits no exact rescaling (an op pins two different factors together)."""


class _Any:
    """The scale of an all-zero tensor: compatible with every factor."""


ANY = _Any()
Form = tuple[dict[str, float], float]  # exponent = sum(coef * var) + constant


class ScalePlan:
    """The exponent constraints of one graph and, per round, the exponents that solve them.

    Args:
        graph: the ONNX graph the module runs.
        leaves: module tensor name -> its current value (numpy), for every floating tensor
            the module holds (initializers and private BatchNorm statistics).
        renamed: (node index, input slot) -> the module tensor a node reads instead.
        weights: the scored weights (their exponents are chosen to normalise a layer).

    Raises:
        InfeasibleScaling: no exact rescaling exists for this graph.
    """

    def __init__(
        self,
        graph: onnx.GraphProto,
        leaves: dict[str, np.ndarray],
        renamed: dict[tuple[int, int], str],
        weights: Iterable[str],
    ) -> None:
        self.graph = graph
        self.renamed = renamed
        self.weights = set(weights)
        self.leaves = {n for n, v in leaves.items() if np.any(v)}
        self.zero_leaves = set(leaves) - self.leaves
        self.order = {name: index for index, name in enumerate(leaves)}
        self.substitution: dict[str, Form] = {}
        self.forms: dict[str, Form | _Any | None] = {}
        for info in graph.input:
            if info.name not in leaves:
                floating = info.type.tensor_type.elem_type in _FLOAT_TYPES
                self.forms[info.name] = ({}, 0.0) if floating else None
        for index, node in enumerate(graph.node):
            self._constrain(index, node)
        self.output = self._resolve(self._form(graph.output[0].name))

    # ---------------------------------------------------------------- structure

    def _input(self, index: int, node: onnx.NodeProto, slot: int) -> str:
        return self.renamed.get((index, slot), node.input[slot]) if slot < len(node.input) else ""

    def _form(self, name: str) -> Form | _Any | None:
        if not name:
            return None
        if name in self.leaves:
            return ({name: 1.0}, 0.0)
        if name in self.zero_leaves:
            return ANY
        return self.forms.get(name)

    def _constrain(self, index: int, node: onnx.NodeProto) -> None:
        inputs = [self._form(self._input(index, node, slot)) for slot in range(len(node.input))]
        outputs = list(node.output)
        if node.op_type == "Identity" and (
            outputs[0] in self.leaves or outputs[0] in self.zero_leaves
        ):
            return  # a BatchNorm statistic the module holds as its own tensor
        result, first_only = self._node_form(node, inputs)
        for name in outputs[:1] if first_only else outputs:
            self.forms[name] = result

    def _node_form(self, node: onnx.NodeProto, inputs: list) -> tuple[Form | _Any | None, bool]:
        """The scale form of a node's outputs, adding the constraints the node imposes.

        Args:
            node: the node.
            inputs: the forms of its inputs (``None``: not a scaled tensor).

        Returns:
            The outputs' form (``None``: not scaled), and whether it applies to the first
            output only.
        """
        op = node.op_type
        if op == "Constant":
            return _constant_form(node), False
        if op == "Cast":
            floating = _attribute(node, "to") in _FLOAT_TYPES
            return (inputs[0] if inputs[0] is not None else ({}, 0.0)) if floating else None, False
        if op in ("Shape", "Size") or op.startswith(_NOT_SCALED_PREFIXES):
            return None, False
        if _scale(op) == PRODUCT:
            return self._product(op, node, inputs), False
        if op == "BatchNormalization":
            return self._batch_norm(inputs), True
        if op == "LayerNormalization":
            return self._layer_norm(inputs), True
        if op == "Clip":
            return self._clip(node, inputs), False
        if _shares_scale(op):
            return self._same_scale(op, inputs), op != "Split"
        # not positively homogeneous (or unknown): it must see its inputs unscaled
        for form in inputs:
            self._equate(form, ({}, 0.0))
        return ({}, 0.0), False

    def _batch_norm(self, inputs: list) -> Form | _Any | None:
        """BatchNormalization: output = input x scale; bias as the output, mean as the input."""
        result = _add(inputs[0], inputs[1])
        self._equate(inputs[2], result)
        self._equate(inputs[3], inputs[0])
        self._equate(inputs[4], ({}, 0.0))
        return result

    def _layer_norm(self, inputs: list) -> Form | _Any | None:
        """LayerNormalization: an unscaled input; the output is scaled like scale and bias."""
        self._equate(inputs[0], ({}, 0.0))
        result = inputs[1]
        if len(inputs) > 2:
            self._equate(inputs[2], result)
        return result

    def _clip(self, node: onnx.NodeProto, inputs: list) -> Form | _Any | None:
        """Clip: the input shares its bounds' scale.

        The backend reads constant bounds once, when it builds the kernel, so bounds that
        would be rescaled (and bounds given as attributes) pin the input unscaled.
        """
        result = inputs[0]
        for form in inputs[1:]:
            scaled = isinstance(form, tuple) and bool(form[0])
            result = self._equate(result, ({}, 0.0) if scaled else form)
        if node.attribute:
            result = self._equate(result, ({}, 0.0))
        return result

    def _same_scale(self, op: str, inputs: list) -> Form | _Any | None:
        """Ops whose listed inputs (all, where none are listed) must share one scale."""
        declared = _scale(op)
        slots = declared if isinstance(declared, tuple) else range(len(inputs))
        result = None
        for slot in slots:
            if slot < len(inputs):
                result = self._equate(result, inputs[slot])
        return result

    def _product(self, op: str, node: onnx.NodeProto, inputs: list) -> Form | _Any | None:
        factors = inputs[:2] if op in ("Conv", "ConvTranspose", "Gemm") else inputs
        if any(f is ANY for f in factors):
            result: Form | _Any | None = ANY
        elif op == "Div":
            result = _add(inputs[0], _negate(inputs[1]))
        else:
            result = None
            for form in factors:
                result = form if result is None else _add(result, form)
        if op in ("Conv", "ConvTranspose", "Gemm") and len(inputs) > 2:
            self._equate(inputs[2], result)
        return result

    def _equate(self, a, b):
        """Require ``a == b`` (eliminating one exponent); returns the common form."""
        if a is None or a is ANY:
            return b
        if b is None or b is ANY:
            return a
        coefficients, constant = self._resolve(_add(a, _negate(b)))
        if not coefficients:
            if abs(constant) > 1e-9:
                raise InfeasibleScaling("two inputs of one op need different fixed factors")
            return a
        # eliminate a bias / BatchNorm parameter first, else the most recent weight
        variable = max(coefficients, key=lambda v: (v not in self.weights, self.order[v]))
        coefficient = coefficients.pop(variable)
        self.substitution[variable] = (
            {v: -c / coefficient for v, c in coefficients.items()},
            -constant / coefficient,
        )
        return a

    def _resolve(self, form) -> Form:
        coefficients, constant = dict(form[0]), form[1]
        while any(v in self.substitution for v in coefficients):
            for variable in [v for v in coefficients if v in self.substitution]:
                coefficient = coefficients.pop(variable)
                inner, offset = self.substitution[variable]
                constant += coefficient * offset
                for v, c in inner.items():
                    coefficients[v] = coefficients.get(v, 0.0) + coefficient * c
        return {v: c for v, c in coefficients.items() if abs(c) > 1e-12}, constant

    # ---------------------------------------------------------------- per round

    def exponents(self, leaves: dict[str, np.ndarray]) -> tuple[dict[str, float], float]:
        """Exponents (log2 factors) for every module tensor, and the output's exponent E.

        Args:
            leaves: module tensor name -> current |value| (masked), for the magnitude estimates.

        Returns:
            ``(exponents, E)``: scale tensor ``t`` by ``2**exponents[t]``; every score then
            comes out ``2**E`` times its true value.
        """
        values: dict[str, float] = {}  # chosen exponents; one not chosen yet counts as 0
        magnitude = {info.name: 0.0 for info in self.graph.input}
        magnitude.update({name: _log2_mean(value) for name, value in leaves.items()})
        origin = {name: name for name in leaves}  # tensor -> the initializer it is a masked copy of
        for index, node in enumerate(self.graph.node):
            if not node.output or node.output[0] in leaves:
                continue
            names = [self._input(index, node, slot) for slot in range(len(node.input))]
            if node.op_type in ("Mul", "Identity", "Cast") and names and names[0] in origin:
                origin[node.output[0]] = origin[names[0]]
            estimate = _estimate(
                node, names, magnitude, {n: leaves[origin[n]] for n in names if n in origin}
            )
            for out in node.output:
                magnitude[out] = estimate
            form = self.forms.get(node.output[0])
            if (
                node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul")
                or form is None
                or form is ANY
            ):
                continue
            coefficients, constant = self._resolve(form)
            free = [v for v in coefficients if v not in values]
            if free and math.isfinite(estimate):
                chosen = max(free, key=lambda v: (v in self.weights, -self.order[v]))
                known = constant + sum(
                    c * values[v] for v, c in coefficients.items() if v in values
                )
                values[chosen] = float(round(-(estimate + known) / coefficients[chosen]))
            for v in free:
                values.setdefault(v, 0.0)
        exponents = {}
        for name in self.leaves:
            if name in self.substitution:
                coefficients, constant = self._resolve(({name: 1.0}, 0.0))
                exponents[name] = constant + sum(
                    c * values.get(v, 0.0) for v, c in coefficients.items()
                )
            else:
                exponents[name] = values.get(name, 0.0)
        output = self.output[1] + sum(c * values.get(v, 0.0) for v, c in self.output[0].items())
        return exponents, output


def _estimate(
    node: onnx.NodeProto,
    names: list[str],
    magnitude: dict[str, float],
    leaves: dict[str, np.ndarray],
) -> float:
    """Rough log2 of a typical value of the node's output in the unscaled network."""
    m = [magnitude.get(n, 0.0) if n else -math.inf for n in names]
    op = node.op_type
    if op in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
        return m[0] + m[1] + math.log2(_fan_in(op, node, names[1], leaves))
    if op in ("Mul", "Einsum"):
        return sum(m)
    if op == "Div":
        return m[0] - m[1]
    if op == "BatchNormalization":
        return max(m[0] + m[1] - 0.5 * m[4], m[2])
    if op in ("Add", "Sub", "Sum", "Max", "Mean", "Concat"):
        return max(m)
    if _shares_scale(op) or op in ("Cast", "Min", "Clip"):
        return m[0] if m else 0.0
    return 0.0


def _fan_in(op: str, node: onnx.NodeProto, weight: str, leaves: dict[str, np.ndarray]) -> float:
    if weight not in leaves:
        return 1.0
    shape = leaves[weight].shape
    if op == "Conv":
        return float(np.prod(shape[1:]))
    if op == "Gemm":
        return float(shape[1] if _attribute(node, "transB") else shape[0])
    return float(shape[-2] if len(shape) >= 2 else 1)


def _log2_mean(value: np.ndarray) -> float:
    mean = float(np.abs(value).mean(dtype=np.float64)) if value.size else 0.0
    return math.log2(mean) if mean > 0 else -math.inf


def _add(a, b):
    if a is None or b is None:
        return a if b is None else b
    if a is ANY or b is ANY:
        return ANY
    coefficients = dict(a[0])
    for v, c in b[0].items():
        coefficients[v] = coefficients.get(v, 0.0) + c
    return coefficients, a[1] + b[1]


def _negate(a):
    if a is None or a is ANY:
        return a
    return {v: -c for v, c in a[0].items()}, -a[1]


def _attribute(node: onnx.NodeProto, name: str):
    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return None


def _constant_form(node: onnx.NodeProto) -> Form | _Any | None:
    for attribute in node.attribute:
        if attribute.name == "value":
            tensor = attribute.t
            if tensor.data_type not in _FLOAT_TYPES:
                return None
            return ANY if not np.any(onnx.numpy_helper.to_array(tensor)) else ({}, 0.0)
        if attribute.name in ("value_float", "value_floats"):
            return ({}, 0.0)
    return None
