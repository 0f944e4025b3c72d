"""Which initializers train: the one place that decides Parameter versus buffer.

Default rule: a floating-point initializer is trainable when it feeds a weight, bias,
scale or shift slot (see ``_PARAM_SLOTS``; the constant operand of an Add/Sub after a
MatMul/Gemm/Conv; a per-feature vector multiplied with or added to activations), directly or
through a chain of mask Muls, Identity, Transpose, Reshape, Cast, Unsqueeze or Squeeze nodes. Masks,
integer tensors, shapes, indices and BatchNorm running statistics are never trainable by
default. The user narrows or widens the rule with a callable or include/exclude patterns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any

import onnx

from n2nonnx.errors import InvalidArgumentError
from n2nonnx.graph.masking import find_mask_sites, mask_initializer_names
from n2nonnx.patterns import matches

_FLOAT_TYPES = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.BFLOAT16,
}

# op_type -> input slots holding weights / biases / scales / shifts
_PARAM_SLOTS: dict[str, tuple[int, ...]] = {
    "Conv": (1, 2),
    "ConvTranspose": (1, 2),
    "Gemm": (0, 1, 2),
    "MatMul": (0, 1),
    "BatchNormalization": (1, 2),
    "InstanceNormalization": (1, 2),
    "LayerNormalization": (1, 2),
    "GroupNormalization": (1, 2),
    "RMSNormalization": (1,),
    "PRelu": (1,),
    "Gather": (0,),
    "Einsum": (0, 1, 2),
}
# nodes a weight may pass through on its way to a slot
_PASS_THROUGH = {"Identity", "Transpose", "Reshape", "Cast", "Unsqueeze", "Squeeze", "Flatten"}
# producers whose output gets a bias added by a following Add / Sub
_BIASED = {"MatMul", "Gemm", "Conv", "ConvTranspose", "Einsum"}

TrainableRule = Callable[[str], bool] | Mapping[str, Iterable[str]] | None


def _walk_to_initializer(
    name: str,
    producers: dict[str, onnx.NodeProto],
    inits: set[str],
    mask_outputs: AbstractSet[str] = frozenset(),
) -> str | None:
    """Follow ``name`` back through pass-through nodes and mask Muls to an initializer."""
    seen = set()
    while name not in inits:
        node = producers.get(name)
        if node is None or name in seen:
            return None
        seen.add(name)
        if node.op_type in _PASS_THROUGH or name in mask_outputs:
            name = node.input[0]
        else:
            return None
    return name


def default_trainable(graph: onnx.GraphProto) -> set[str]:
    """Initializers the default rule makes trainable.

    Args:
        graph: the model's main graph.

    Returns:
        Names of floating-point, non-mask initializers that feed a weight/bias/scale slot.
    """
    inits = {t.name: t for t in graph.initializer}
    names = set(inits)
    producers = {out: node for node in graph.node for out in node.output}
    sites = find_mask_sites(graph)
    mask_outputs = {site.output for site in sites.values()}
    mask_names = {site.mask for site in sites.values()} | {s.cast for s in sites.values() if s.cast}
    found: set[str] = set()

    def walk(tensor: str) -> str | None:
        return _walk_to_initializer(tensor, producers, names, mask_outputs)

    def mark(tensor: str) -> None:
        source = walk(tensor)
        if (
            source is not None
            and inits[source].data_type in _FLOAT_TYPES
            and source not in mask_names
        ):
            found.add(source)

    for node in graph.node:
        slots = _PARAM_SLOTS.get(node.op_type, ())
        for slot in slots:
            if slot < len(node.input) and node.input[slot]:
                mark(node.input[slot])
        if node.op_type in ("Mul", "Add") and len(node.input) == 2:
            # a per-feature scale / shift applied to activations (decomposed LayerNorm, Keras
            # BatchNorm as Mul+Add). Scalars and matrices (attention masks, tables) stay
            # constants; widen with include=[...] for e.g. learned position embeddings.
            for here, other in ((0, 1), (1, 0)):
                source = walk(node.input[here])
                if (
                    source is not None
                    and source not in mask_names
                    and node.input[other] not in mask_names
                    and walk(node.input[other]) is None
                    and _is_feature_vector(inits[source])
                ):
                    mark(node.input[here])
        if node.op_type in ("Add", "Sub") and len(node.input) == 2:
            for here, other in ((0, 1), (1, 0)):
                producer = producers.get(node.input[here])
                while producer is not None and producer.op_type in _PASS_THROUGH:
                    producer = producers.get(producer.input[0])
                if producer is not None and producer.op_type in _BIASED:
                    mark(node.input[other])
    return found


def _is_feature_vector(tensor: onnx.TensorProto) -> bool:
    """Exactly one axis longer than 1 (shapes like (C,), (C, 1, 1), (1, C, 1, 1))."""
    return sum(1 for dim in tensor.dims if dim > 1) == 1


def resolve_trainable(graph: onnx.GraphProto, rule: TrainableRule = None) -> set[str]:
    """Apply the user's rule on top of the default.

    Args:
        graph: the model's main graph.
        rule: ``None`` for the default; a callable ``name -> bool`` deciding for every
            floating-point non-mask initializer; or a mapping with optional ``include``
            and ``exclude`` lists of glob or regular-expression patterns (a name matching
            ``include`` becomes trainable, one matching ``exclude`` stops being trainable;
            exclude wins).

    Returns:
        Names of the initializers to hold as ``nn.Parameter``.

    Raises:
        InvalidArgumentError: the rule is of an unknown kind or has unknown keys.
    """
    mask_names = mask_initializer_names(graph)
    candidates = {
        t.name
        for t in graph.initializer
        if t.data_type in _FLOAT_TYPES and t.name not in mask_names
    }
    if rule is None:
        return default_trainable(graph)
    if callable(rule):
        return {name for name in candidates if rule(name)}
    if isinstance(rule, Mapping):
        unknown = set(rule) - {"include", "exclude"}
        if unknown:
            raise InvalidArgumentError(
                f"trainable rule has unknown keys {sorted(unknown)}; use 'include' and/or 'exclude'"
            )
        include = _as_list(rule.get("include", ()))
        exclude = _as_list(rule.get("exclude", ()))
        chosen = default_trainable(graph) | {n for n in candidates if matches(n, include)}
        return {n for n in chosen if not matches(n, exclude)}
    raise InvalidArgumentError(
        f"trainable must be None, a callable name -> bool, or dict(include=..., exclude=...); got {type(rule).__name__}"
    )


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)
