"""BatchNorm running statistics that an exporter aliased to other tensors get private buffers."""

from __future__ import annotations

import onnx


def aliased_running_stats(
    graph: onnx.GraphProto, initializers: set[str], trainable: set[str]
) -> tuple[dict[str, str], dict[tuple[int, int], str]]:
    """BatchNorm running-stat inputs that share storage with another tensor.

    Exporters dedup equal tensors: the legacy torch exporter feeds a fresh BatchNorm's
    running mean / var through ``Identity`` nodes from its bias / scale; other tools point
    both slots at one initializer. Updating such a stat in train mode would overwrite the
    weight, so each one gets a private buffer.

    Returns:
        ``(sources, renamed)``: stat tensor name -> the initializer it starts from, and
        (node index, input slot) -> the new stat name for inputs that must be renamed
        (a stat that *is* a shared or trainable initializer).
    """
    producers = {out: node for node in graph.node for out in node.output}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    taken = set(initializers) | set(producers)
    sources: dict[str, str] = {}
    renamed: dict[tuple[int, int], str] = {}
    for index, node in enumerate(graph.node):
        if node.op_type != "BatchNormalization":
            continue
        for slot, label in ((3, "running_mean"), (4, "running_var")):
            if slot >= len(node.input):
                continue
            name = node.input[slot]
            if name in initializers:
                if name in trainable or uses.get(name, 0) > 1:
                    new = f"{node.name or node.output[0]}/{label}"
                    while new in taken:
                        new += "_"
                    taken.add(new)
                    sources[new] = name
                    renamed[(index, slot)] = new
                continue
            source = name
            while (
                source not in initializers
                and source in producers
                and producers[source].op_type == "Identity"
            ):
                source = producers[source].input[0]
            if source != name and source in initializers:
                sources[name] = source
    return sources, renamed
