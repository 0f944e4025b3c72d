"""Provenance inside the model: one versioned JSON document under one metadata key.

Every stage that changes a model appends a record (``stage``, its parameters, per-layer
counts ...) so a later stage, or a later release, can read what an earlier one did.

The document is read tolerantly: provenance is information about a model, not part of
it, so a model whose record is damaged (not JSON, nested too deeply, ``stages`` not a
list) is still a model every verb accepts. A damaged document reads as absent, with a
logged warning; ``stages`` keeps only its object records. The next stage that writes
provenance writes a fresh, valid document (the input file is never modified).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import onnx

METADATA_KEY = "n2nonnx"
METADATA_VERSION = 2  # 2: n2nonnx's nodes carry tags (see n2nonnx.tags); 1: recognised by names


log = logging.getLogger(__name__)
_warned: set[int] = set()  # damaged documents already reported (each is read several times)


def read(proto: onnx.ModelProto) -> dict[str, Any]:
    """The n2nonnx provenance document of ``proto``.

    Returns:
        The document; an empty one if it is absent or damaged (see the module docstring).
        ``stages`` is always a list of dicts.
    """
    for prop in proto.metadata_props:
        if prop.key == METADATA_KEY:
            try:
                document = json.loads(prop.value)
            except (ValueError, RecursionError):  # not JSON, a NUL byte, nested too deeply
                _warn_once(prop.value, "not valid JSON")
                break
            if not isinstance(document, dict) or "version" not in document:
                break
            records = document.get("stages", [])
            if not isinstance(records, list):
                _warn_once(prop.value, "its stages are not a list")
                records = []
            document["stages"] = [record for record in records if isinstance(record, dict)]
            return document
    return {"version": METADATA_VERSION, "stages": []}


def _warn_once(text: str, problem: str) -> None:
    if hash(text) not in _warned:
        _warned.add(hash(text))
        log.warning(
            "ignoring the model's damaged n2nonnx provenance record (%s); a fresh one is written "
            "with the output",
            problem,
        )


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
    document["stages"].append({"stage": stage, **record})
    write(proto, document)


def stages(proto: onnx.ModelProto, stage: str | None = None) -> list[dict[str, Any]]:
    """All stage records of ``proto``, optionally only those named ``stage``."""
    records = read(proto).get("stages", [])
    return [r for r in records if stage is None or r.get("stage") == stage]
