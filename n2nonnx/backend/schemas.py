"""The ONNX schema table: every op's schema versions in the installed ``onnx.defs``.

A model's opset selects an op's *active* schema, the newest ``since_version`` at or below
the opset; the op registry (:mod:`n2nonnx.backend.registry`) checks converters against it.
"""

from __future__ import annotations

import functools

import onnx


def normal_domain(domain: str) -> str:
    """The domain as the registry keys it: ``""`` for the default domain (``"ai.onnx"`` too)."""
    return "" if domain in ("", "ai.onnx") else domain


def domain_name(domain: str) -> str:
    """The domain as messages name it: ``"ai.onnx"`` for the default domain."""
    return domain or "ai.onnx"


@functools.cache
def _schema_table() -> dict[tuple[str, str], tuple[tuple[int, ...], frozenset[int]]]:
    """(domain, op_type) -> (sorted schema versions, the deprecated ones) from onnx.defs."""
    versions: dict[tuple[str, str], set[int]] = {}
    deprecated: dict[tuple[str, str], set[int]] = {}
    for schema in onnx.defs.get_all_schemas_with_history():
        key = (normal_domain(schema.domain), schema.name)
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
    found = _schema_table().get((normal_domain(domain), op_type))
    return found[0] if found else ()


def is_deprecated(op_type: str, domain: str, version: int) -> bool:
    """True if ``onnx.defs`` marks schema ``op_type``-``version`` deprecated (the op was removed)."""
    found = _schema_table().get((normal_domain(domain), op_type))
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
