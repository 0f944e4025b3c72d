"""What ``n2nonnx inspect`` shows: the layer table and totals, as a dict and as text.

JSON schema (``n2nonnx inspect --json``), version ``n2nonnx.inspect/1``::

    {"schema": "n2nonnx.inspect/1", "source": str | null, "opset": int,
     "inputs":  [{"name", "shape": [int | str | null], "dtype"}], "outputs": [...],
     "layers":  [Layer.to_dict() + {"density": float, "nonzero": int, "masked": bool}],
     "totals":  {"layers", "prunable_parameters", "nonzero_prunable_parameters",
                 "density", "parameters"},
     "provenance": the n2nonnx metadata document}
"""

from __future__ import annotations

from typing import Any

import numpy as np

from n2nonnx.model import Model


def describe(model: Model) -> dict[str, Any]:
    """The inspection document of ``model`` (see the module docstring for the schema)."""
    layers = []
    prunable = nonzero_total = 0
    counted: set[str] = set()  # a weight shared by several layers counts once
    for layer in model.layers:
        effective = model.effective_weight(layer)
        nonzero = int(np.count_nonzero(effective))
        entry = layer.to_dict()
        entry.update(
            masked=model.mask(layer.weight) is not None,
            nonzero=nonzero,
            density=nonzero / max(layer.parameters, 1),
        )
        layers.append(entry)
        if layer.weight not in counted:
            counted.add(layer.weight)
            prunable += layer.parameters
            nonzero_total += nonzero
    return {
        "schema": "n2nonnx.inspect/1",
        "source": str(model.source) if model.source else None,
        "opset": model.opset,
        "inputs": [_tensor(t) for t in model.graph_inputs],
        "outputs": [_tensor(t) for t in model.graph_outputs],
        "layers": layers,
        "totals": {
            "layers": len(layers),
            "prunable_parameters": prunable,
            "nonzero_prunable_parameters": nonzero_total,
            "density": nonzero_total / max(prunable, 1),
            "parameters": model.parameter_count,
        },
        "provenance": model.metadata,
    }


def _tensor(info) -> dict[str, Any]:
    return {
        "name": info.name,
        "shape": list(info.shape) if info.shape else None,
        "dtype": info.dtype,
    }


def format_table(document: dict[str, Any]) -> str:
    """The inspection document as a readable table."""
    show_density = any(layer["masked"] for layer in document["layers"])
    header = ["#", "layer", "op", "weight shape", "params", "units", "spatial in -> out", "depth"]
    if show_density:
        header.append("density")
    header.append("feeds")
    rows = []
    for layer in document["layers"]:
        feeds = ", ".join(
            _target(edge) + (" (+)" if "Add" in edge["via"] or "Sum" in edge["via"] else "")
            for edge in layer["feeds"]
        )
        row = [
            str(layer["index"]),
            layer["name"],
            layer["op"],
            "x".join(str(d) for d in layer["weight_shape"]),
            f"{layer['parameters']:,}",
            str(layer["units"]),
            f"{_spatial(layer['spatial_in'])} -> {_spatial(layer['spatial_out'])}",
            str(layer["depth"]),
        ]
        if show_density:
            row.append(f"{layer['density']:.2%}")
        row.append(feeds)
        rows.append(row)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    totals = document["totals"]
    inputs = ", ".join(f"{t['name']} {_shape(t['shape'])}" for t in document["inputs"])
    lines += [
        "",
        f"inputs: {inputs}   opset: {document['opset']}",
        f"layers: {totals['layers']}   prunable parameters: {totals['prunable_parameters']:,}   "
        f"all parameters: {totals['parameters']:,}",
    ]
    if show_density:
        lines.append(
            f"non-zero prunable parameters: {totals['nonzero_prunable_parameters']:,} "
            f"(density {totals['density']:.2%})"
        )
    lines.append("(+) = through a residual Add/Sum")
    return "\n".join(lines)


def _target(edge: dict[str, Any]) -> str:
    return edge["target"]


def _spatial(dims: list[int]) -> str:
    return "x".join(str(d) for d in dims) if dims else "-"


def _shape(shape) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")" if shape else "(?)"
