"""Pooled copies of source tensors, shared between N2NSkip branches and with the network."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import helper

from n2nonnx.graph.index import GraphIndex


class Pools:
    """Pooled versions of source tensors, shared between branches and with the network.

    Non-overlapping max / average pooling composes (a 4x4 window is a 2x2 window of a 2x2
    window), so a branch pools from the largest pooled copy of its source that already
    exists: the network's own pooling of that tensor where it has one, or another
    branch's. The runtime then reads each full-size activation at most once for pooling.
    """

    def __init__(self, index: GraphIndex, protected: set[str]) -> None:
        self.known: dict[tuple[str, str], dict[tuple[int, ...], str]] = {}
        for node in index.nodes:
            if (
                node.op_type not in ("MaxPool", "AveragePool", "GlobalAveragePool")
                or node.input[0] in protected
            ):
                continue
            if node.op_type == "GlobalAveragePool":
                self.known.setdefault((node.input[0], "GlobalAveragePool"), {})[()] = node.output[0]
                continue
            window = tuple(index.attribute(node, "kernel_shape", ()))
            plain = (
                tuple(index.attribute(node, "strides", ())) == window
                and not any(index.attribute(node, "pads", ()) or ())
                and index.attribute(node, "auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
                and not index.attribute(node, "ceil_mode", 0)
                and all(d == 1 for d in index.attribute(node, "dilations", ()) or ())
                and (len(node.output) == 1 or not node.output[1])
                and (node.op_type == "MaxPool" or not index.attribute(node, "count_include_pad", 0))
            )
            if plain and window:
                self.known.setdefault((node.input[0], node.op_type), {})[window] = node.output[0]
        self.network = {key: dict(windows) for key, windows in self.known.items()}

    def network_window(self, tensor: str, op: str, window: tuple[int, ...]) -> tuple[int, ...]:
        """The largest window by which the network itself pools ``tensor`` that divides ``window``.

        Args:
            tensor: the source tensor.
            op: ``MaxPool`` or ``AveragePool``.
            window: the whole downsampling a branch needs.

        Returns:
            That window, or all ones where the network does not pool ``tensor`` so.
        """
        best = _largest_dividing(self.network.get((tensor, op), {}), window)
        return best if best is not None else (1,) * len(window)

    def pooled(
        self, tensor: str, op: str, window: tuple[int, ...], base: str, nodes: list[onnx.NodeProto]
    ) -> str:
        """``tensor`` pooled by ``op`` over ``window`` (``()`` for GlobalAveragePool)."""
        have = self.known.setdefault((tensor, op), {})
        if window in have:
            return have[window]
        output = f"{base}/pooled" if op != "GlobalAveragePool" else f"{base}/averaged"
        if op == "GlobalAveragePool":
            nodes.append(helper.make_node(op, [tensor], [output], name=f"{base}/global_pool"))
        else:
            start, step = tensor, window
            best = _largest_dividing(have, window)
            if best is not None:
                start, step = have[best], tuple(b // a for a, b in zip(best, window, strict=True))
            nodes.append(
                helper.make_node(
                    op,
                    [start],
                    [output],
                    name=f"{base}/pool",
                    kernel_shape=list(step),
                    strides=list(step),
                )
            )
        have[window] = output
        return output


def _largest_dividing(
    windows: Iterable[tuple[int, ...]], window: tuple[int, ...]
) -> tuple[int, ...] | None:
    """The largest of ``windows`` that divides ``window`` axis by axis (None: none does)."""
    fits = [
        have
        for have in windows
        if len(have) == len(window) and all(b % a == 0 for a, b in zip(have, window, strict=True))
    ]
    return max(fits, key=lambda w: int(np.prod(w))) if fits else None
