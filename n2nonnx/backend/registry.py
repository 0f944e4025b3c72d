"""The op registry: ONNX (domain, op_type, schema version) -> a builder of a torch callable.

A *builder* (:data:`~n2nonnx.backend.spec.Builder`) receives a
:class:`~n2nonnx.backend.spec.NodeSpec` once, at module construction, and returns a
*kernel*, a plain function of the node's runtime input tensors (see :mod:`n2nonnx.backend.spec`).

Builders are registered with :func:`register_op`, each declaring the ONNX schema versions
(the ``since_version`` of each of the op's schemas in ``onnx.defs``) whose semantics it
implements. A model's opset selects the op's active schema (the newest one at or below the
opset); a node runs only if a builder declares exactly that version, otherwise it is refused
with :class:`~n2nonnx.errors.UnsupportedOpError` instead of running an older semantics.
Ops that ``onnx.defs`` does not know (custom domains) keep the simple rule: the builder with
the highest declared version at or below the opset.

This module imports none of its converters: importing :mod:`n2nonnx.backend` imports
:mod:`n2nonnx.backend.ops`, whose modules register themselves here.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import onnx

from n2nonnx.backend.schemas import (
    active_version,
    domain_name,
    is_deprecated,
    normal_domain,
    schema_versions,
)
from n2nonnx.backend.spec import Builder, Kernel, NodeSpec
from n2nonnx.errors import UnsupportedOpError

__all__ = [
    "Builder",
    "Kernel",
    "NodeSpec",
    "active_version",
    "covered_versions",
    "is_deprecated",
    "register_op",
    "resolve",
    "schema_versions",
    "supported_ops",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Converter:
    versions: tuple[int, ...]
    builder: Builder


# (domain, op_type) -> converters sorted by their first declared version
_REGISTRY: dict[tuple[str, str], list[_Converter]] = {}


def _declared(
    op_type: str, domain: str, since: int | None, until: int | None, versions: Sequence[int] | None
) -> tuple[int, ...]:
    """The versions a registration declares, checked against the installed onnx.defs."""
    name = f"{domain_name(domain)}::{op_type}"
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
    dom = normal_domain(domain)
    declared = _declared(op_type, dom, since, until, versions)

    def decorate(builder: Builder) -> Builder:
        converters = _REGISTRY.setdefault((dom, op_type), [])
        taken = sorted(set(declared) & {v for c in converters for v in c.versions})
        if taken:
            raise ValueError(
                f"duplicate converter for {domain_name(dom)}::{op_type} version(s) {taken}"
            )
        converters.append(_Converter(declared, builder))
        converters.sort(key=lambda c: c.versions[0])
        return builder

    return decorate


def _table_key(domain: str, op_type: str) -> str:
    return f"{domain}::{op_type}" if domain else op_type


def supported_ops() -> dict[str, list[int]]:
    """Every op the backend can execute.

    Returns:
        ``"op_type"`` (or ``"domain::op_type"`` outside the default domain) -> the first
        schema version of each of its converters, sorted (see :func:`covered_versions` for
        every schema version they implement).
    """
    return {
        _table_key(*key): [c.versions[0] for c in converters]
        for key, converters in sorted(_REGISTRY.items())
    }


def covered_versions() -> dict[str, list[int]]:
    """Every op the backend can execute, with every schema version its converters implement.

    Returns:
        ``"op_type"`` (or ``"domain::op_type"``) -> the sorted schema versions declared.
    """
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
        domain_name(domain),
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
    dom = normal_domain(domain)
    converters = _REGISTRY.get((dom, op_type), [])
    where = f"node {node_name!r} (op {op_type}, domain {domain_name(dom)!r}, opset {opset})"
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
