"""SynFlow (Tanaka et al. 2020): data-free, iterative synaptic-flow pruning.

Every parameter is replaced by its absolute value, an all-ones input (batch 1) is fed,
``R = sum(output)`` and the score is ``|w * dR/dw|``. Over ``iterations`` rounds the
density follows ``density ** (k / iterations)``, pruning by the allocation each round.
BatchNorm runs in eval mode.

Integer inputs (token ids) have no all-ones value: an embedding is ``Gather(table, ids)``,
so SynFlow's input is taken to be all ones *in embedding space*: each Gather of an integer
graph input's ids is cut out and its output becomes a float input fed with ones, as if
every token's embedding were the all-ones vector (:func:`embedding_space`). The table itself
is then not part of the flow (it is no prunable layer). Integer inputs read by other nodes
as well (a mask, position ids) are fed ones there.

Products of many ``|w|`` leave float32's range on deep networks. By default the rounds run
unscaled in float64. ``options={"precision": "float32"}`` runs them in float32 instead,
rescaling the positive network each round by powers of two chosen per layer
(:mod:`n2nonnx.pruning.criteria.scaling`): every score is multiplied by the same ``2**E``,
the ranking (hence the masks) is unchanged, and the returned scores are divided by it
again; it falls back to float64 where a graph admits no exact rescaling. On a CPU the
float32 path measured slower (a 23.7 M-parameter ResNet, 100 rounds: 1454 s against 810 s,
``examples/benchmark_prune.py --models cifar-resnet --methods synflow --synflow-float32``),
since the per-round rescaling pass costs more than float64 arithmetic saves; it is meant
for GPUs, where float64 is slow.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import torch

from n2nonnx.errors import InvalidArgumentError, ShapeError
from n2nonnx.pruning.criteria.scaling import InfeasibleScaling, ScalePlan
from n2nonnx.pruning.registry import ScoringContext, criterion

if TYPE_CHECKING:
    from n2nonnx.model import Model

logger = logging.getLogger(__name__)

PRECISIONS = {"float32": torch.float32, "float64": torch.float64}


def synflow_round(module, names: list[str], input_shape) -> dict[str, np.ndarray]:
    """One SynFlow scoring pass: ``|w * dR/dw|`` of ``module`` (already holding masked |w|).

    Args:
        module: the |theta| module.
        names: the weights to score.
        input_shape: the shape of the all-ones input, or input name -> (shape, floating)
            for several inputs (see :func:`embedding_space`).

    Returns:
        Weight name -> scores.
    """
    weights = [module.tensor(name) for name in names]
    if isinstance(input_shape, Mapping):
        output = module(
            **{
                name: torch.ones(shape, dtype=weights[0].dtype if floating else torch.int64)
                for name, (shape, floating) in input_shape.items()
            }
        )
    else:
        output = module(torch.ones(input_shape, dtype=weights[0].dtype))
    output = output[0] if isinstance(output, tuple) else output
    grads = torch.autograd.grad(output.sum(), weights)
    with torch.no_grad():
        return {
            name: g.mul_(w).abs_().numpy() for name, w, g in zip(names, weights, grads, strict=True)
        }


def embedding_space(
    model: Model,
) -> tuple[onnx.ModelProto, dict[str, tuple[list[int], bool]]] | None:
    """The graph fed with ones in embedding space, for a model with integer inputs.

    Args:
        model: the model to score.

    Returns:
        None when no graph input is an integer; else the graph with every ``Gather`` of an
        integer input's ids replaced by a float graph input (the Gather's output), and
        input name -> (shape at batch 1, floating) of every input of that graph.

    Raises:
        ShapeError: an embedding's output has an unknown size besides the batch.
    """
    index = model.index
    integer = {
        info.name
        for info in model.graph_inputs
        if info.dtype.startswith(("int", "uint")) and info.name in index.graph_inputs
    }
    if not integer:
        return None
    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    graph = proto.graph
    lookups = [
        node
        for node in graph.node
        if node.op_type == "Gather"
        and node.input[1] in integer
        and index.weight_initializer(node.input[0]) is not None
    ]
    cut = {id(node) for node in lookups}
    kept = [node for node in graph.node if id(node) not in cut]
    del graph.node[:]
    graph.node.extend(kept)
    infos = {v.name: v for v in graph.value_info}
    for node in lookups:
        value = infos.get(node.output[0]) or onnx.helper.make_empty_tensor_value_info(
            node.output[0]
        )
        graph.input.append(value)
    read = {name for node in graph.node for name in node.input}
    inputs = [v for v in graph.input if v.name not in integer or v.name in read]
    del graph.input[:]
    graph.input.extend(inputs)
    initializers = {t.name for t in graph.initializer}
    feeds = {}
    for value in graph.input:
        if value.name in initializers:
            continue
        shape = index.shape(value.name)
        sizes = [1, *(shape or ())[1:]]
        if shape is None or not all(isinstance(d, int) for d in sizes):
            raise ShapeError(
                f"SynFlow feeds ones to {value.name!r}, whose shape {shape} has unknown sizes "
                "besides the batch; pass the input shapes (--input-shape NAME=1x128)"
            )
        feeds[value.name] = ([int(d) for d in sizes], value.name not in integer)  # type: ignore[arg-type]
    return proto, feeds


def absolute_module(
    context: ScoringContext,
    dtype: torch.dtype = torch.float64,
    proto: onnx.ModelProto | None = None,
):
    """An OnnxModule in ``dtype``, eval mode, with every floating tensor made |x|.

    Args:
        context: the scoring context.
        dtype: the module's float type.
        proto: the graph to run (default: the context's model), e.g. from
            :func:`embedding_space`.
    """
    from n2nonnx.backend import OnnxModule

    module = OnnxModule(context.model if proto is None else proto, dtype=dtype)
    module.eval()
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.is_floating_point():
                tensor.abs_()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    for name in context.weights:
        module.tensor(name).requires_grad_(True)
    return module


class _Rescaler:
    """Applies a :class:`ScalePlan`'s exponents to a module's tensors, round after round."""

    def __init__(self, module, graph, weights: list[str]) -> None:
        names = [*module.initializer_names, *getattr(module, "_stat_sources", {})]
        self.tensors = {n: module.tensor(n) for n in names if module.tensor(n).is_floating_point()}
        values = {n: t.detach().numpy() for n, t in self.tensors.items()}
        self.plan = ScalePlan(graph, values, dict(getattr(module, "_stat_renames", {})), weights)
        self.current = {n: 0.0 for n in self.tensors}
        self.output_exponent = 0.0

    @torch.no_grad()
    def rescale(self) -> None:
        values = {n: t.detach().numpy() for n, t in self.tensors.items()}
        exponents, self.output_exponent = self.plan.exponents(values)
        for name, exponent in exponents.items():
            step = exponent - self.current[name]
            if step:
                self.tensors[name].mul_(2.0**step)
            self.current[name] = exponent


@criterion("synflow", needs_data=False, summary="iterative synaptic flow |w * dR/dw|, data-free")
def synflow_scores(context: ScoringContext) -> dict[str, np.ndarray]:
    """Score weights by iterative SynFlow: ``|w * dR/dw|``, ``R`` the summed all-ones output.

    With ``context.allocate`` it prunes over ``iterations`` rounds towards
    ``context.density`` on an exponential schedule, rescoring the survivors each round;
    without it, one round. In float32 the graph is rescaled by exact powers of two to
    stay in range, falling back to float64 where that fails.

    Args:
        context: the scoring context; option ``sample_shape`` (the input shape without
            the batch) is required; ``iterations`` (default 100) and ``precision``
            (``float32`` or ``float64``) are optional.

    Returns:
        Weight name -> float64 scores; weights pruned in an earlier round score ``-inf``.

    Raises:
        InvalidArgumentError: an unknown ``precision``.
    """
    precision = context.options.get("precision", "float64")
    if precision not in PRECISIONS:
        raise InvalidArgumentError(
            f"SynFlow precision must be one of {sorted(PRECISIONS)}, got {precision!r}"
        )
    try:
        return _synflow(context, PRECISIONS[precision])
    except _OutOfRange:
        logger.info("SynFlow left float32's range on this graph; running it in float64")
        return _synflow(context, torch.float64)


class _OutOfRange(Exception):
    """A float32 round gave non-finite scores (the graph pins factors that overflow)."""


def _synflow(context: ScoringContext, dtype: torch.dtype) -> dict[str, np.ndarray]:
    from tqdm.auto import tqdm

    iterations = int(context.options.get("iterations", 100))
    embedded = embedding_space(context.model)
    proto = context.model.proto if embedded is None else embedded[0]
    module, rescaler = _scaled_module(context, dtype, proto)
    input_shape: Any = [1, *context.options["sample_shape"]] if embedded is None else embedded[1]
    masks = {name: np.ones(module.tensor(name).shape, dtype=bool) for name in context.weights}
    scores: dict[str, np.ndarray] = {}
    rounds = tqdm(
        range(1, iterations + 1),
        desc="synflow",
        unit="round",
        disable=None if context.progress else True,
    )
    for round_index in rounds:
        if rescaler is not None:
            rescaler.rescale()
        scores = synflow_round(module, context.weights, input_shape)
        if rescaler is not None and not all(np.isfinite(s).all() for s in scores.values()):
            raise _OutOfRange
        if context.allocate is None:
            break
        density = context.density ** (round_index / iterations)
        masked_scores = {n: np.where(masks[n], s, -np.inf) for n, s in scores.items()}
        masks = {n: m > 0 for n, m in context.allocate(masked_scores, density).items()}
        with torch.no_grad():  # pruned weights never come back: mask in place
            for name in context.weights:
                module.tensor(name).mul_(torch.from_numpy(masks[name]))
    # Final scores: survivors rank above everything pruned in earlier rounds.
    unscale = 2.0 ** -(rescaler.output_exponent if rescaler is not None else 0.0)
    return {
        n: np.where(masks[n], scores[n].astype(np.float64) * unscale, -np.inf)
        for n in context.weights
    }


def _scaled_module(context: ScoringContext, dtype: torch.dtype, proto: onnx.ModelProto):
    """The |theta| module in ``dtype`` and, for float32, the rescaler that keeps it in range."""
    module = absolute_module(context, dtype, proto)
    if dtype == torch.float64:
        return module, None
    try:
        return module, _Rescaler(module, proto.graph, context.weights)
    except InfeasibleScaling as reason:
        logger.info("SynFlow runs in float64: this graph admits no exact rescaling (%s)", reason)
        return absolute_module(context, torch.float64, proto), None
