"""Write-back: trained values into the initializers of a copy of the model they came from.

:meth:`~n2nonnx.backend.module.OnnxModule.write_back` uses :func:`write_back`: every
initializer the module holds gets its current value in its ONNX dtype (node names,
initializer names, order and n2nonnx's tags unchanged), and BatchNorm running statistics
that the exporter had aliased to another initializer through an Identity become
initializers of their own once training moved them apart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from n2nonnx.tags import replace_tensor


def write_back(
    source: onnx.ModelProto,
    values: Mapping[str, np.ndarray],
    live: Callable[[str], torch.Tensor],
    stat_sources: Mapping[str, str],
    stat_renames: Mapping[tuple[int, int], str],
) -> onnx.ModelProto:
    """A copy of ``source`` whose initializers hold ``values``.

    Args:
        source: the ModelProto the module was built from (not changed).
        values: initializer name -> its current value in its ONNX dtype, aliased running
            statistics included (``OnnxModule.initializer_values``).
        live: initializer name -> the live tensor (read for bfloat16, which numpy lacks).
        stat_sources: aliased running statistic -> the initializer it was aliased to.
        stat_renames: (node index, input index) -> the running statistic that BatchNorm
            input reads.

    Returns:
        A new ModelProto; initializers ``values`` does not name are copied unchanged.
    """
    proto = onnx.ModelProto()
    proto.CopyFrom(source)
    for index, tensor in enumerate(proto.graph.initializer):
        if tensor.name in stat_sources:
            continue
        if tensor.name not in values:
            continue
        if tensor.data_type == onnx.TensorProto.BFLOAT16:
            raw = live(tensor.name).detach().cpu().to(torch.bfloat16).view(torch.int16).numpy()
            new = onnx.helper.make_tensor(
                tensor.name, tensor.data_type, raw.shape, raw.tobytes(), raw=True
            )
        else:
            new = numpy_helper.from_array(values[tensor.name], tensor.name)
        replace_tensor(proto.graph.initializer[index], new)  # keeps n2nonnx's tags
    _materialise_stats(proto, values, stat_sources, stat_renames)
    return proto


def _materialise_stats(
    proto: onnx.ModelProto,
    values: Mapping[str, np.ndarray],
    stat_sources: Mapping[str, str],
    stat_renames: Mapping[tuple[int, int], str],
) -> None:
    """Aliased running stats that no longer equal their alias become initializers of their own.

    Args:
        proto: the model being written (changed in place: BatchNorm inputs renamed, the
            aliasing Identity nodes removed, the statistics appended as initializers).
        values: initializer name -> current value, aliased statistics and their sources included.
        stat_sources: aliased running statistic -> the initializer it was aliased to.
        stat_renames: (node index, input index) -> the running statistic that input reads.
    """
    graph = proto.graph
    moved = {
        name: values[name]
        for name, source in stat_sources.items()
        if not np.array_equal(values[name], values[source])
    }
    for (index, slot), new in stat_renames.items():
        if (
            new in moved
            and index < len(graph.node)
            and graph.node[index].op_type == "BatchNormalization"
        ):
            graph.node[index].input[slot] = new
    aliases = [
        i for i, n in enumerate(graph.node) if n.op_type == "Identity" and n.output[0] in moved
    ]
    for index in reversed(aliases):
        del graph.node[index]
    for name, value in moved.items():
        graph.initializer.append(numpy_helper.from_array(value, name))
