"""The op registry: ONNX (domain, op_type, schema version) -> a builder of a torch callable.

A *builder* receives a :class:`NodeSpec` once, at module construction, reads the node's
attributes and constant inputs, and returns a *kernel*: a plain function of the node's
runtime input tensors (``None`` for an omitted optional input) that returns one tensor or
a tuple of tensors (one per node output, extra trailing ones are ignored).

Builders are registered with :func:`register_op`, each declaring the ONNX schema versions
(the ``since_version`` of each of the op's schemas in ``onnx.defs``) whose semantics it
implements. A model's opset selects the op's active schema (the newest one at or below the
opset); a node runs only if a builder declares exactly that version, otherwise it is refused
with :class:`~n2nonnx.errors.UnsupportedOpError` instead of running an older semantics.
Ops that ``onnx.defs`` does not know (custom domains) keep the simple rule: the builder with
the highest declared version at or below the opset.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper

from n2nonnx.errors import UnsupportedOpError

log = logging.getLogger(__name__)

Kernel = Callable[..., Any]
Builder = Callable[["NodeSpec"], Kernel]


@dataclass(frozen=True)
class _Converter:
    versions: tuple[int, ...]
    builder: Builder


# (domain, op_type) -> converters sorted by their first declared version
_REGISTRY: dict[tuple[str, str], list[_Converter]] = {}
_LOADED = False


def _normal_domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


def _domain_name(domain: str) -> str:
    return domain or "ai.onnx"


@functools.cache
def _schema_table() -> dict[tuple[str, str], tuple[tuple[int, ...], frozenset[int]]]:
    """(domain, op_type) -> (sorted schema versions, the deprecated ones) from onnx.defs."""
    versions: dict[tuple[str, str], set[int]] = {}
    deprecated: dict[tuple[str, str], set[int]] = {}
    for schema in onnx.defs.get_all_schemas_with_history():
        key = (_normal_domain(schema.domain), schema.name)
        versions.setdefault(key, set()).add(schema.since_version)
        if schema.deprecated:
            deprecated.setdefault(key, set()).add(schema.since_version)
    return {
        key: (tuple(sorted(found)), frozenset(deprecated.get(key, ())))
        for key, found in versions.items()
    }


def schema_versions(op_type: str, domain: str = "") -> tuple[int, ...]:
    """The ``since_version`` of every schema of an op in the installed ``onnx.defs``.

    Args:
        op_type: ONNX op type.
        domain: op domain (``""`` and ``"ai.onnx"`` are the same).

    Returns:
        The sorted versions; empty for an op ``onnx.defs`` does not know.
    """
    found = _schema_table().get((_normal_domain(domain), op_type))
    return found[0] if found else ()


def is_deprecated(op_type: str, domain: str, version: int) -> bool:
    """True if ``onnx.defs`` marks schema ``op_type``-``version`` deprecated (the op was removed)."""
    found = _schema_table().get((_normal_domain(domain), op_type))
    return bool(found and version in found[1])


def active_version(op_type: str, domain: str, opset: int) -> int | None:
    """The op's schema version in force at a model opset: the newest ``since_version <= opset``.

    Args:
        op_type: ONNX op type.
        domain: op domain.
        opset: the model's opset for that domain.

    Returns:
        The schema version, or None if the op has no schema at or below ``opset`` (or
        ``onnx.defs`` does not know it).
    """
    usable = [v for v in schema_versions(op_type, domain) if v <= opset]
    return usable[-1] if usable else None


def _declared(
    op_type: str, domain: str, since: int | None, until: int | None, versions: Sequence[int] | None
) -> tuple[int, ...]:
    """The versions a registration declares, checked against the installed onnx.defs."""
    name = f"{_domain_name(domain)}::{op_type}"
    known = schema_versions(op_type, domain)
    newest = onnx.defs.onnx_opset_version()
    if versions is not None:
        if since is not None or until is not None:
            raise ValueError(f"{name}: pass either versions=... or since=/until=, not both")
        declared = tuple(sorted(set(versions)))
    elif known or domain == "":
        if since is None or until is None:
            raise ValueError(
                f"{name}: declare the schema versions the converter implements, "
                f"versions=(...) or since=..., until=... (onnx.defs has {list(known)})"
            )
        declared = tuple(v for v in known if since <= v <= until) or (since,)
        for bound in (since, until):
            if bound <= newest and bound not in known:
                raise ValueError(
                    f"{name}: {bound} is not a schema version (onnx.defs has {list(known)})"
                )
    else:  # an op onnx.defs does not know: one open-ended version
        declared = (1 if since is None else since,)
    if not declared:
        raise ValueError(f"{name}: no versions declared")
    # versions newer than the installed onnx cannot be checked here (onnx older than the project's)
    wrong = [v for v in declared if v <= newest and (known or domain == "") and v not in known]
    if wrong:
        raise ValueError(f"{name}: {wrong} are not schema versions (onnx.defs has {list(known)})")
    return declared


def register_op(
    op_type: str,
    since: int | None = None,
    domain: str = "",
    *,
    until: int | None = None,
    versions: Sequence[int] | None = None,
) -> Callable[[Builder], Builder]:
    """Decorator registering a builder for the ONNX schema versions it implements.

    Args:
        op_type: the ONNX op type, e.g. ``"Conv"``.
        since: first schema version implemented (with ``until``: every schema version in
            ``[since, until]``). For an op ``onnx.defs`` does not know, ``since`` alone
            registers a builder used from that opset on.
        domain: the op domain (``""`` and ``"ai.onnx"`` are the same).
        until: last schema version implemented.
        versions: the schema versions implemented, listed explicitly.

    Returns:
        The decorator; it returns the builder unchanged.

    Raises:
        ValueError: a declared version is not a schema version of the op in ``onnx.defs``,
            an op ``onnx.defs`` knows is registered without an explicit range, or a version
            is already registered for the same (domain, op_type).
    """
    dom = _normal_domain(domain)
    declared = _declared(op_type, dom, since, until, versions)

    def decorate(builder: Builder) -> Builder:
        converters = _REGISTRY.setdefault((dom, op_type), [])
        taken = sorted(set(declared) & {v for c in converters for v in c.versions})
        if taken:
            raise ValueError(
                f"duplicate converter for {_domain_name(dom)}::{op_type} version(s) {taken}"
            )
        converters.append(_Converter(declared, builder))
        converters.sort(key=lambda c: c.versions[0])
        return builder

    return decorate


def _load_ops() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        from n2nonnx.backend import ops  # noqa: F401  (import fills the registry)


def _table_key(domain: str, op_type: str) -> str:
    return f"{domain}::{op_type}" if domain else op_type


def supported_ops() -> dict[str, list[int]]:
    """Every op the backend can execute.

    Returns:
        ``"op_type"`` (or ``"domain::op_type"`` outside the default domain) -> the first
        schema version of each of its converters, sorted (see :func:`covered_versions` for
        every schema version they implement).
    """
    _load_ops()
    return {
        _table_key(*key): [c.versions[0] for c in converters]
        for key, converters in sorted(_REGISTRY.items())
    }


def covered_versions() -> dict[str, list[int]]:
    """Every op the backend can execute, with every schema version its converters implement.

    Returns:
        ``"op_type"`` (or ``"domain::op_type"``) -> the sorted schema versions declared.
    """
    _load_ops()
    return {
        _table_key(*key): sorted(v for c in converters for v in c.versions)
        for key, converters in sorted(_REGISTRY.items())
    }


@functools.cache
def _warn_newer_opset(domain: str, opset: int) -> None:
    log.warning(
        "model opset %d for %s is newer than the installed onnx knows (%d); op versions above "
        "that are resolved from the converters' declarations only",
        opset,
        _domain_name(domain),
        onnx.defs.onnx_opset_version(),
    )


def resolve(op_type: str, domain: str, opset: int, node_name: str = "") -> Builder:
    """The builder for an op at a model's opset.

    For an op ``onnx.defs`` knows, the op's active schema version at ``opset`` must be one
    a converter declares; for other ops, the converter with the highest declared version
    at or below ``opset`` is used.

    Args:
        op_type: ONNX op type.
        domain: op domain.
        opset: the model's opset version for that domain.
        node_name: for the error message.

    Returns:
        The builder.

    Raises:
        UnsupportedOpError: no converter for this op, or none for its schema version at
            ``opset`` (one line naming node, op, domain, opset and the covered versions).
    """
    _load_ops()
    dom = _normal_domain(domain)
    converters = _REGISTRY.get((dom, op_type), [])
    where = f"node {node_name!r} (op {op_type}, domain {_domain_name(dom)!r}, opset {opset})"
    hint = "list the supported ops with n2nonnx.backend.supported_ops()"
    covered = sorted(v for c in converters for v in c.versions)
    known = schema_versions(op_type, dom)
    if not known:
        usable = [c for c in converters if c.versions[0] <= opset]
        if not usable:
            known_text = f" (converters exist only for opsets {covered})" if converters else ""
            raise UnsupportedOpError(f"{where} has no converter{known_text}; {hint}")
        return usable[-1].builder
    if not converters:
        raise UnsupportedOpError(f"{where} has no converter; {hint}")
    if opset > onnx.defs.onnx_opset_version():
        _warn_newer_opset(dom, opset)
    candidates = [v for v in sorted(set(known) | set(covered)) if v <= opset]
    if not candidates:
        raise UnsupportedOpError(
            f"{where}: {op_type} does not exist before opset {known[0]}; "
            f"re-export the model at opset {known[0]} or newer"
        )
    version = candidates[-1]
    for converter in converters:
        if version in converter.versions:
            return converter.builder
    why = (
        " (deprecated: removed from ONNX at that version)"
        if is_deprecated(op_type, dom, version)
        else ""
    )
    raise UnsupportedOpError(
        f"{where} uses schema {op_type}-{version}{why}, which no converter implements (covered versions: "
        f"{covered}); re-export the model at an opset whose {op_type} version is covered, or {hint}"
    )


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
