"""Padding to alignment: zero units that give convolutions input channel counts onnxruntime blocks.

A model pruned elsewhere arrives with widths like 53 or 126 and nothing left to remove, so
:mod:`~n2nonnx.deployment.align` (which keeps removable units) cannot help it. Padding
can: :func:`pad_to_align` appends zero units to the layers that feed a convolution whose
input channel count is above ``align`` and not a multiple of it (53 -> 64), with
:func:`n2nonnx.units.pad_units`, an exact rewrite. The layers padded together are those
whose units reach the convolution's last input channels (both sides of a residual Add
among them, and every layer joined element-wise with one of them, to a fixpoint).

A convolution is left alone, with the reason, where padding cannot be exact (a graph
input feeds it, a Softmax over channels on the way, a padded unit would reach a graph
output ...) or would misalign another convolution that was aligned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from n2nonnx.deployment.align import check_align
from n2nonnx.errors import InvalidArgumentError, UnsupportedOpError
from n2nonnx.graph.layers import Layer
from n2nonnx.model import Model


@dataclass
class PaddingPlan:
    """What :func:`pad_to_align` did.

    Attributes:
        model: the padded model (the input model where nothing was padded).
        align: the multiple.
        counts: layer -> units appended to it.
        widths: convolution -> [input channels before, after], for those that grew.
        refused: convolution -> why its input channels were left unaligned.
    """

    model: Model
    align: int
    counts: dict[str, int] = field(default_factory=dict)
    widths: dict[str, list[int]] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)

    @property
    def added(self) -> int:
        """Units appended in all."""
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record for the deploy summary."""
        return {
            "align": self.align,
            "added": self.added,
            "counts": dict(self.counts),
            "widths": {k: list(v) for k, v in self.widths.items()},
            "refused": dict(self.refused),
        }


def check_pad_to_align(pad_to_align: object, align: int) -> None:
    """Refuse a padding request that cannot mean anything.

    Raises:
        InvalidArgumentError: ``pad_to_align`` is not a bool, or it is asked with
            ``align`` 0 or 1 (no alignment to pad to).
    """
    if not isinstance(pad_to_align, bool):
        raise InvalidArgumentError(f"pad_to_align must be True or False, got {pad_to_align!r}")
    if pad_to_align and check_align(align) <= 1:
        raise InvalidArgumentError(
            f"--pad-to-align pads widths to multiples of --align, which is {align} (off); "
            "give --align N with N >= 2"
        )


def unaligned(channels: int, align: int) -> bool:
    """Whether a convolution reading ``channels`` is worth padding (above ``align``, not a multiple)."""
    return channels > align and channels % align != 0


def pad_to_align(model: Model, align: int = 16) -> PaddingPlan:
    """Pad layers so that convolutions read multiples of ``align`` input channels.

    Args:
        model: the model (not modified; masks folded).
        align: the multiple (>= 2).

    Returns:
        The :class:`PaddingPlan`; its model computes what ``model`` does.

    Raises:
        InvalidArgumentError: ``align`` is not an integer >= 2.
    """
    from n2nonnx.units import pad_units

    check_pad_to_align(True, align)
    plan = PaddingPlan(model, align)
    for name in [la.name for la in model.layers if la.op == "Conv"]:
        current = plan.model
        conv = current.layer(name)
        if not unaligned(conv.in_units, align):
            continue
        sources = _sources(current, conv)
        if isinstance(sources, str):
            plan.refused[name] = sources
            continue
        count = -(-conv.in_units // align) * align - conv.in_units
        try:
            padded = pad_units(current, dict.fromkeys(sources, count))
        except (UnsupportedOpError, InvalidArgumentError) as error:
            plan.refused[name] = str(error).removeprefix("pad_units: ")
            continue
        before, after = _conv_widths(current), _conv_widths(padded)
        broken = [
            c for c in before if not unaligned(before[c], align) and unaligned(after[c], align)
        ]
        if broken:
            plan.refused[name] = (
                f"padding {', '.join(sources)} by {count} would misalign {', '.join(broken)}"
            )
            continue
        plan.model = padded
        for source in sources:
            plan.counts[source] = plan.counts.get(source, 0) + count
        for conv_name, width in after.items():
            if width != before[conv_name]:
                first = plan.widths.get(conv_name, [before[conv_name]])[0]
                plan.widths[conv_name] = [first, width]
    return plan


def _conv_widths(model: Model) -> dict[str, int]:
    return {la.name: la.in_units for la in model.layers if la.op == "Conv"}


def _sources(model: Model, conv: Layer) -> list[str] | str:
    """The layers to pad for ``conv`` (its last input channels' sources, closed under joins); or why none."""
    if conv.groups > 1:
        return f"grouped ({conv.groups} groups); padding would have to grow its groups"
    sources: set[str] = set()
    for edge in conv.fed_by:
        if edge.mixed or edge.unit_map is None:
            return f"its input channels come through {'/'.join(edge.via) or 'ops'} that mix them"
        if edge.unit_map[-1] < 0:
            continue
        if edge.source.startswith("input:"):
            return f"its last input channels come from graph input {edge.source[6:]!r}"
        sources.add(edge.source)
    if not sources:
        return "no layer feeds its last input channels"
    changed = True
    while changed:  # every layer joined element-wise with one to pad is padded too
        changed = False
        for layer in model.layers:
            if not any(e.source in sources for e in layer.fed_by):
                continue
            for position in range(layer.in_units):
                feeding = {
                    e.source
                    for e in layer.fed_by
                    if e.unit_map is not None and e.unit_map[position] >= 0
                }
                if feeding & sources and not feeding <= sources:
                    inputs = [s for s in feeding if s.startswith("input:")]
                    if inputs:
                        return (
                            f"the layers feeding it are joined with graph input {inputs[0][6:]!r}"
                        )
                    sources |= feeding
                    changed = True
    return sorted(sources)
