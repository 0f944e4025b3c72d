"""Provenance inside the model: one versioned JSON document under one metadata key.

Every stage that changes a model appends a record (``stage``, its parameters, per-layer
counts ...) so a later stage, or a later release, can read what an earlier one did.
"""

from __future__ import annotations

import json
from typing import Any

import onnx

METADATA_KEY = "n2nonnx"
METADATA_VERSION = 2  # 2: n2nonnx's nodes carry tags (see n2nonnx.tags); 1: recognised by names


def read(proto: onnx.ModelProto) -> dict[str, Any]:
    """The n2nonnx provenance document of ``proto`` (an empty one if absent)."""
    for prop in proto.metadata_props:
        if prop.key == METADATA_KEY:
            document = json.loads(prop.value)
            if not isinstance(document, dict) or "version" not in document:
                break
            return document
    return {"version": METADATA_VERSION, "stages": []}


def write(proto: onnx.ModelProto, document: dict[str, Any]) -> None:
    """Store ``document`` under the n2nonnx key of ``proto`` (in place), replacing any old one."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"))
    for prop in proto.metadata_props:
        if prop.key == METADATA_KEY:
            prop.value = text
            return
    proto.metadata_props.add(key=METADATA_KEY, value=text)


def append_stage(proto: onnx.ModelProto, stage: str, **record: Any) -> None:
    """Append the record of one stage (``prune``, ``n2nskip``, ``train`` ...) in place."""
    document = read(proto)
    document["version"] = METADATA_VERSION
    document.setdefault("stages", []).append({"stage": stage, **record})
    write(proto, document)


def stages(proto: onnx.ModelProto, stage: str | None = None) -> list[dict[str, Any]]:
    """All stage records of ``proto``, optionally only those named ``stage``."""
    records = read(proto).get("stages", [])
    return [r for r in records if stage is None or r.get("stage") == stage]
