"""Tags that mark what n2nonnx added to a graph, stored in the ONNX itself.

Every node and initializer a stage adds carries ``metadata_props`` entry
``n2nonnx.role`` (see the role constants below); later stages recognise their own
nodes by that tag, never by their names, so a user's initializer called ``attn/mask`` is
just an initializer. Names stay human-readable but carry no meaning.

Models written by n2nonnx 0.1 had no tags: their masks were ``W/mask`` initializers applied
by ``W/apply_mask`` Muls, and their skip nodes were named ``n2nskip/...``.
:func:`upgrade_legacy` reads that convention once, at load, and only for models whose
provenance record says n2nonnx wrote them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import onnx

ROLE_KEY = "n2nonnx.role"

MASK = "mask"  #: initializer holding a pruning mask (bool, or 0/1 of the weight's dtype)
MASK_CAST = "mask-cast"  #: Cast of a bool mask to the weight's dtype
MASK_APPLY = "mask-apply"  #: Mul ``weight * mask`` whose output replaces the weight
SKIP = "skip"  #: a node or weight of an N2NSkip branch
SKIP_JOIN = "skip-join"  #: the Add that brings a skip branch into its target layer

# Roles of nodes that must stay nodes (constant folding would bake the mask into the weight).
PROTECTED_NODE_ROLES = frozenset({MASK_CAST, MASK_APPLY})

_LEGACY_MASK_SUFFIX = "/mask"
_LEGACY_SKIP_PREFIX = "n2nskip/"


def tag(item: onnx.NodeProto | onnx.TensorProto, role: str) -> None:
    """Mark ``item`` (in place) as added by n2nonnx in ``role``."""
    for prop in item.metadata_props:
        if prop.key == ROLE_KEY:
            prop.value = role
            return
    item.metadata_props.add(key=ROLE_KEY, value=role)


def role(item: onnx.NodeProto | onnx.TensorProto) -> str | None:
    """The n2nonnx role of ``item``, or None for anything n2nonnx did not add."""
    for prop in item.metadata_props:
        if prop.key == ROLE_KEY:
            return prop.value
    return None


def replace_tensor(tensor: onnx.TensorProto, new: onnx.TensorProto) -> None:
    """Overwrite ``tensor`` with ``new`` (in place), keeping its tags and doc string."""
    kept, doc = list(tensor.metadata_props), tensor.doc_string
    tensor.CopyFrom(new)
    del tensor.metadata_props[:]
    tensor.metadata_props.extend(kept)
    tensor.doc_string = doc


def tagged(items: Iterable[onnx.NodeProto | onnx.TensorProto], *roles: str) -> list:
    """The items whose role is one of ``roles``."""
    wanted = set(roles)
    return [item for item in items if role(item) in wanted]


def node_key(node: onnx.NodeProto) -> str:
    """A key that survives graph rewrites: the node's first output."""
    return node.output[0] if node.output else node.name


def snapshot(graph: onnx.GraphProto) -> dict[tuple[str, str], str]:
    """Every tag of ``graph``, keyed by (kind, name): to restore after a tool drops them."""
    saved = {("node", node_key(n)): r for n in graph.node if (r := role(n)) is not None}
    saved.update({("init", t.name): r for t in graph.initializer if (r := role(t)) is not None})
    return saved


def restore(graph: onnx.GraphProto, saved: dict[tuple[str, str], str]) -> None:
    """Re-apply tags taken by :func:`snapshot` to the nodes and initializers still present."""
    for node in graph.node:
        if (r := saved.get(("node", node_key(node)))) is not None:
            tag(node, r)
    for tensor in graph.initializer:
        if (r := saved.get(("init", tensor.name))) is not None:
            tag(tensor, r)


def upgrade_legacy(proto: onnx.ModelProto, provenance_key: str) -> bool:
    """Tag the masks and skip nodes of a model written by n2nonnx 0.1 (in place).

    Only a model with an n2nonnx provenance record and no tags at all is read by the old
    naming convention, so a user's own ``*/mask`` initializer is never taken for a mask.

    Args:
        proto: the model.
        provenance_key: the metadata key of the provenance record.

    Returns:
        True if anything was tagged.
    """
    document = next((p.value for p in proto.metadata_props if p.key == provenance_key), None)
    if document is None or _has_tags(proto.graph) or not _is_legacy_document(document):
        return False
    graph = proto.graph
    initializers = {t.name: t for t in graph.initializer}
    changed = False
    for node in graph.node:
        if (
            node.op_type == "Mul"
            and len(node.input) == 2
            and node.input[1].endswith(_LEGACY_MASK_SUFFIX)
            and node.input[1][: -len(_LEGACY_MASK_SUFFIX)] == node.input[0]
            and node.input[1] in initializers
        ):
            tag(node, MASK_APPLY)
            tag(initializers[node.input[1]], MASK)
            changed = True
        elif node.name.startswith(_LEGACY_SKIP_PREFIX):
            is_join = node.op_type == "Add" and node.name.endswith("/add")
            tag(node, SKIP_JOIN if is_join else SKIP)
            changed = True
    return changed


def _has_tags(graph: onnx.GraphProto) -> bool:
    return any(role(n) is not None for n in graph.node) or any(
        role(t) is not None for t in graph.initializer
    )


def _is_legacy_document(text: str) -> bool:
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return False
    return isinstance(document, dict) and document.get("version") == 1
