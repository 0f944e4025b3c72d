"""The removal choice: no removal, exact or aligned dead-unit removal, picked by measurement.

Removing dead units is exact but not always faster: onnxruntime's blocked convolution
(NCHWc) needs input channel counts that are multiples of its block, so a few removed units
can make a convolution slower than the dense one (see :mod:`~n2nonnx.deployment.align`).
:func:`choose_removal` builds the variants — ``aligned`` (kept widths rounded up to a
multiple of ``align``), ``exact`` (every dead unit removed) and ``none`` (the folded model)
— times them against each other in onnxruntime (1 thread, batch 1, interleaved rounds,
median of the per-round ratios to ``none``; a budget of about a second) and keeps the
fastest. Ratios within :data:`TIE` of the fastest count as equal, and then the earlier of
``aligned``, ``exact``, ``none`` is kept (fewer units first among the removals), so the
choice is a deterministic function of the measured numbers.

With ``pad_to_align`` a fourth variant competes: ``padded``, the exact removal (or the
folded model, when nothing is dead) with zero units appended where convolutions read
unaligned channel counts (:mod:`~n2nonnx.deployment.padding`); it is last in the order
of preference, so it is kept only when it measures faster than the others (or, without
timing, whenever it pads anything).

It also reads the graph onnxruntime optimises the chosen variant into
(``SessionOptions.optimized_model_filepath``) and warns when a 2-D convolution stays
outside the blocked kernels with an input channel count that is not a multiple of the
block, and counts the layout reorders next to such convolutions.
"""

from __future__ import annotations

import functools
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from n2nonnx.deployment.align import aligned_removal, check_align, kept_widths
from n2nonnx.deployment.dead import DeadUnits, add_to_biases, random_inputs
from n2nonnx.deployment.timing import interleaved_times, ratio_medians
from n2nonnx.model import Model

log = logging.getLogger(__name__)

TIE = 0.05
"""Ratios this close to the fastest count as equal (timing noise at a small budget)."""

ORDER = ("aligned", "exact", "none", "padded")
"""Preference among variants that measure equal."""

_NCHWC = "com.microsoft.nchwc"
_REORDERS = ("ReorderInput", "ReorderOutput")
_PLAIN_CONVS = ("Conv", "FusedConv")


@dataclass
class RemovalChoice:
    """The variant :func:`choose_removal` kept, and what it measured.

    Attributes:
        chosen: ``aligned``, ``exact``, ``none`` or ``padded``.
        dead: the chosen removal (a :class:`~n2nonnx.deployment.dead.DeadUnits`; empty
            ``remove`` for ``none``; for ``padded``, the removal padded after).
        pruned: the folded model with the chosen removal applied.
        align: the alignment asked for (0: off).
        measured: whether the variants were timed (False: ``timing`` off, or one variant).
        seconds: variant -> median seconds per call (batch 1, 1 thread), when measured.
        ratios: variant -> median of the per-round ratios to ``none``, when measured.
        removed: variant -> units it removes.
        widths: variant -> layer -> [full width, kept width], for the narrowed layers.
        block: onnxruntime's NCHWc block on this machine (None: no blocked kernels).
        warnings: layout warnings about the chosen variant's optimised graph.
        padding: the :meth:`~n2nonnx.deployment.padding.PaddingPlan.to_dict` record when
            padding was asked for (None: it was not).
    """

    chosen: str
    dead: DeadUnits
    pruned: Model
    align: int
    measured: bool = False
    seconds: dict[str, float] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)
    widths: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    block: int | None = None
    warnings: list[str] = field(default_factory=list)
    padding: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able numbers for the deploy summary."""
        return {
            "chosen": self.chosen,
            "align": self.align,
            "measured": self.measured,
            "seconds": dict(self.seconds),
            "ratios": dict(self.ratios),
            "removed": dict(self.removed),
            "widths": {v: dict(w) for v, w in self.widths.items()},
            "block": self.block,
            "warnings": list(self.warnings),
            "padding": self.padding,
        }


def describe_removal(record: dict[str, Any] | None) -> list[str]:
    """Report lines for a :meth:`RemovalChoice.to_dict` record (none for None)."""
    if not record:
        return []
    variants = ", ".join(
        f"{v} {record['removed'][v]} units"
        + (f" {record['ratios'][v]:.2f}x" if v in record["ratios"] else "")
        for v in ORDER
        if v in record["removed"]
    )
    how = (
        "measured in onnxruntime, batch 1, 1 thread, time ratio to no removal"
        if record["measured"]
        else "not measured"
    )
    align = f"align {record['align']}" if record["align"] > 1 else "align off"
    lines = [f"unit removal       {record['chosen']} ({align}; {variants}; {how})"]
    lines += [f"  warning: {w}" for w in record["warnings"]]
    padding = record.get("padding")
    if padding is not None:
        grown = ", ".join(f"{c} {a}->{b}" for c, (a, b) in padding["widths"].items())
        lines.append(
            f"padding            {padding['added']} zero units added to {len(padding['counts'])} "
            f"layer(s) (align {padding['align']})" + (f": input channels {grown}" if grown else "")
        )
        lines += [f"  left unaligned: {c}: {why}" for c, why in padding["refused"].items()]
    return lines


def choose_removal(
    folded: Model,
    dead: DeadUnits,
    *,
    align: int = 16,
    timing: bool = True,
    budget: float = 1.0,
    seed: int = 0,
    pad_to_align: bool = False,
) -> RemovalChoice:
    """Build the removal variants, time them if asked, and keep the fastest.

    Args:
        folded: the model with its masks folded (what ``dead`` was found in).
        dead: its dead units (:func:`~n2nonnx.deployment.dead.find_dead_units`).
        align: round kept widths up to a multiple of this (0 or 1: off, only ``exact``
            and ``none`` compete).
        timing: time the variants (False: ``aligned`` when aligning, else ``exact``,
            unmeasured).
        budget: about how many seconds the timing may take (sessions not counted).
        seed: seed of the random timing inputs.
        pad_to_align: also build the ``padded`` variant (see the module docstring).

    Returns:
        The :class:`RemovalChoice`.

    Raises:
        InvalidArgumentError: ``align`` is not an integer >= 0 (>= 2 with ``pad_to_align``).
    """
    from n2nonnx.deployment import padding
    from n2nonnx.units import remove_units

    align = check_align(align)
    padding.check_pad_to_align(pad_to_align, align)
    removals: dict[str, DeadUnits] = {}
    if dead.count:
        if align > 1:
            aligned = aligned_removal(folded, dead, align)
            if aligned.count and _same(aligned, dead):
                removals["exact"] = dead
            elif aligned.count:
                removals["aligned"] = aligned
        removals.setdefault("exact", dead)
        removals["none"] = dead.restricted(folded, {}) if dead.analysis is not None else DeadUnits()
    else:
        removals["none"] = dead
    models = {
        v: remove_units(add_to_biases(folded, d.bias_deltas), d.remove) if d.count else folded
        for v, d in removals.items()
    }
    base = "exact" if "exact" in models else "none"
    plan = padding.pad_to_align(models[base], align) if pad_to_align else None
    if plan is not None and plan.added:
        removals["padded"] = removals[base]
        models["padded"] = plan.model
    choice = RemovalChoice(
        chosen=next(v for v in ORDER if v in removals),
        dead=dead,
        pruned=folded,
        align=align,
        removed={v: d.count for v, d in removals.items()},
        widths={v: kept_widths(folded, d) for v, d in removals.items() if d.count},
        block=nchwc_block(),
        padding=plan.to_dict() if plan is not None else None,
    )
    if "padded" in models and not timing:
        choice.chosen = "padded"
    with tempfile.TemporaryDirectory(prefix="n2nonnx-layout-") as scratch:
        optimized = {v: Path(scratch) / f"{v}.onnx" for v in models}
        if timing and len(models) > 1:
            sessions = {v: _session(m.proto, optimized[v]) for v, m in models.items()}
            feeds = random_inputs(folded, batch=1, rng=np.random.default_rng(seed))
            choice.seconds, choice.ratios = _measure(sessions, feeds, budget)
            choice.measured = True
            best = min(choice.ratios.values())
            choice.chosen = next(v for v in ORDER if v in models and choice.ratios[v] <= best + TIE)
        else:
            _session(models[choice.chosen].proto, optimized[choice.chosen])
        choice.warnings = layout_warnings(optimized[choice.chosen], choice.block)
    choice.dead, choice.pruned = removals[choice.chosen], models[choice.chosen]
    return choice


def _same(a: DeadUnits, b: DeadUnits) -> bool:
    return a.remove.keys() == b.remove.keys() and all(
        np.array_equal(a.remove[k], b.remove[k]) for k in a.remove
    )


def _session(proto: onnx.ModelProto | bytes, optimized: Path | None = None):
    """A 1-thread CPU session at full optimisation (writing its optimised graph to ``optimized``)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    data = proto if isinstance(proto, bytes) else proto.SerializeToString()
    return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])


def _measure(
    sessions: dict[str, Any], feeds: dict[str, np.ndarray], budget: float, rounds: int = 7
) -> tuple[dict[str, float], dict[str, float]]:
    """Median seconds per call of each session and median per-round ratio to ``none``."""
    names = list(sessions)
    for name in names:  # warm up, and a first estimate of one call
        sessions[name].run(None, feeds)
    start = time.perf_counter()
    for name in names:
        sessions[name].run(None, feeds)
    once = max(time.perf_counter() - start, 1e-6)
    rounds = max(3, min(rounds, int(budget / once)))
    calls = int(np.clip(budget / (rounds * once), 1, 200))
    times = interleaved_times(
        [sessions[name] for name in names], feeds, rounds=rounds, calls=calls, warmup=0
    )
    seconds = {name: float(np.median(t)) for name, t in zip(names, times, strict=True)}
    ratios = dict(zip(names, ratio_medians(times, names.index("none")), strict=True))
    return seconds, ratios


@functools.cache
def nchwc_block() -> int | None:
    """The NCHWc channel block of onnxruntime on this machine (None: no blocked kernels).

    Probed once per process. onnxruntime 1.32 turns a convolution into an NCHWc one when
    its input channel count is below the block or a multiple of 4 (or of the block): a
    convolution reading 10 channels (from another convolution) is blocked only with a block
    of 16, one reading 6 only with a block of 8 or more.
    """
    try:
        with tempfile.TemporaryDirectory(prefix="n2nonnx-nchwc-") as scratch:
            path = Path(scratch) / "probe.onnx"
            _session(_probe_model(), path)
            graph = onnx.load(str(path)).graph
    except Exception as error:  # noqa: BLE001 - a probe: no answer is an answer
        log.debug("NCHWc probe failed: %s", error)
        return None
    blocked = {n.name for n in graph.node if n.domain == _NCHWC and n.op_type == "Conv"}
    if not blocked:
        return None
    if any(name.startswith("y10_") for name in blocked):
        return 16
    return 8 if any(name.startswith("y6_") for name in blocked) else None


def _probe_model() -> onnx.ModelProto:
    nodes, inputs, outputs, inits = [], [], [], []
    for channels in (6, 10):
        x, y = f"x{channels}", f"y{channels}"
        inputs.append(helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 16, 8, 8]))
        outputs.append(helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, 16, 8, 8]))
        for name, shape in (
            (f"a{channels}", (channels, 16, 3, 3)),
            (f"b{channels}", (16, channels, 3, 3)),
        ):
            inits.append(numpy_helper.from_array(np.full(shape, 0.01, np.float32), name))
        nodes += [
            helper.make_node(
                "Conv", [x, f"a{channels}"], [f"h{channels}"], pads=[1] * 4, name=f"first{channels}"
            ),
            helper.make_node(
                "Conv",
                [f"h{channels}", f"b{channels}"],
                [y],
                pads=[1] * 4,
                name=f"second{channels}",
            ),
        ]
    graph = helper.make_graph(nodes, "nchwc_probe", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def layout_warnings(optimized: Path, block: int | None) -> list[str]:
    """Warnings about convolutions onnxruntime runs outside its blocked (NCHWc) kernels.

    Args:
        optimized: the optimised graph onnxruntime wrote for the model.
        block: the NCHWc block (None: no warnings, the machine has no blocked kernels).

    Returns:
        One line for the unaligned convolutions (names and input channels) and the
        reorder nodes next to them; empty when there are none.
    """
    if block is None or not optimized.exists():
        return []
    try:
        graph = onnx.load(str(optimized), load_external_data=False).graph
    except Exception as error:  # noqa: BLE001 - a diagnostic only
        log.debug("could not read onnxruntime's optimised graph: %s", error)
        return []
    dims = {t.name: list(t.dims) for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for tensor in node.input:
            consumers.setdefault(tensor, []).append(node)
    slow = []
    for node in graph.node:
        if node.domain == _NCHWC or node.op_type not in _PLAIN_CONVS or len(node.input) < 2:
            continue
        shape = dims.get(node.input[1])
        if shape is None or len(shape) != 4:
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        channels = shape[1] * group
        if channels % block:
            slow.append((node, channels))
    if not slow:
        return []
    near = set()
    for node, _ in slow:  # reorders within a few single-input steps of the slow conv
        for step in _walk(node, producer, consumers):
            if step.domain == _NCHWC and step.op_type in _REORDERS:
                near.add(step.name or step.output[0])
    listed = ", ".join(f"{n.name or n.output[0]} ({c} input channels)" for n, c in slow[:6])
    more = f" and {len(slow) - 6} more" if len(slow) > 6 else ""
    return [
        f"onnxruntime runs {len(slow)} convolution(s) outside its blocked kernels "
        f"(NCHWc, block {block}): {listed}{more}; {len(near)} layout reorder node(s) next to "
        f"them. Channel counts that are multiples of {block} keep the fast kernels (--align)"
    ]


def _walk(
    node: onnx.NodeProto,
    producer: dict[str, onnx.NodeProto],
    consumers: dict[str, list[onnx.NodeProto]],
    steps: int = 3,
) -> list[onnx.NodeProto]:
    """Nodes up to ``steps`` hops before and after ``node``."""
    seen: list[onnx.NodeProto] = []
    frontier = [node]
    for _ in range(steps):
        following = []
        for current in frontier:
            before = [producer[t] for t in current.input if t in producer]
            after = [c for t in current.output for c in consumers.get(t, [])]
            following += before + after
        frontier = [n for n in following if all(n is not s for s in seen) and n is not node]
        seen += frontier
    return seen
