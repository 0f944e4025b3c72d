"""The records of the layer view: :class:`Layer`, :class:`Edge` and the layer op names.

They import nothing from the rest of the graph package, so the modules that build the view
(:mod:`~n2nonnx.graph.describe`, :mod:`~n2nonnx.graph.trace`, :mod:`~n2nonnx.graph.wiring`)
and :mod:`~n2nonnx.graph.layers`, which drives them, all read them from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from n2nonnx.graph.ops import ACTIVATIONS, UNIT_NORMS

LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")

# Ops that may follow a layer's pre-activation and still belong to "the layer".
CHAIN_OPS = UNIT_NORMS | ACTIVATIONS | {"PRelu"}


@dataclass(frozen=True, eq=False)
class Edge:
    """A data path from one layer (or graph input) to another layer (or graph output).

    Attributes:
        source: layer name, or ``input:<graph input name>``.
        target: layer name, or ``output:<graph output name>``.
        via: op types crossed on the way, in order (``("Relu", "MaxPool", "Flatten")``).
        unit_map: one entry per input unit of the target (``target.in_units`` long): the
            source unit that feeds it, or -1 where another source feeds it. ``None`` when
            the mapping could not be followed (treat as every source unit feeding every
            target input unit).
        mixed: some op on the way makes each position depend on other units (a
            LayerNorm or Softmax over the unit axis, a reduction over it broadcast back,
            attention): the unit map still says where each unit *sits*, but for
            reachability every source unit feeds every target input unit, and no unit can
            be removed through it (see :mod:`n2nonnx.graph.units`).
    """

    source: str
    target: str
    via: tuple[str, ...]
    unit_map: np.ndarray | None
    mixed: bool = False

    def to_dict(self) -> dict:
        """The edge as JSON-ready data (``mapped`` tells whether a unit map was followed)."""
        return {
            "source": self.source,
            "target": self.target,
            "via": list(self.via),
            "mapped": self.unit_map is not None,
            "mixed": self.mixed,
        }

    @property
    def positions(self) -> np.ndarray | None:
        """The unit map where each target position reads only its own source unit, else None."""
        return None if self.mixed else self.unit_map


@dataclass(frozen=True, eq=False)
class Layer:
    """One prunable layer of a normalised graph.

    Attributes:
        name: unique layer name (the node's name).
        op: ``Conv``, ``ConvTranspose``, ``Gemm`` or ``MatMul``.
        index: topological position among layers (0-based).
        depth: longest path from a graph input counted in layers (first layer: 1).
        weight: initializer name of the weight (the raw one, also when masked).
        bias: initializer name of the bias (Conv B, Gemm C, or a MatMul's bias Add), or None.
        weight_shape: shape of the weight.
        unit_axis: weight axis indexing output units (neurons / channels).
        in_axis: weight axis indexing input units.
        units: output neurons / channels.
        in_units: input features / channels of the data input.
        groups: convolution groups (1 for the others).
        fan_in: weights per output unit.
        input: the layer's data input tensor.
        preact: pre-activation output (after the bias Add where the bias is separate).
        output: the tensor after the normalisation / activation chain.
        chain: op types of that chain.
        in_feature_axis / out_feature_axis: tensor axis of the units in input / output.
        spatial_in / spatial_out: sizes other than batch and units (H, W; sequence; ()).
        feeds: edges to later layers and graph outputs.
        fed_by: edges from earlier layers and graph inputs.
        is_skip: the layer belongs to a skip branch (its node is tagged ``skip``, see
            :mod:`n2nonnx.tags`).
        merges_into: for a skip layer, the layer whose pre-activation (or chain, after its
            normalisation) its branch is added to; read from the graph.
        removal_blocker: why none of the layer's units can be removed from the graph (the
            first op on their way that the unit rules cannot rewrite, see
            :mod:`n2nonnx.graph.units`), or None when they can.
    """

    name: str
    op: str
    index: int
    weight: str
    bias: str | None
    weight_shape: tuple[int, ...]
    unit_axis: int
    in_axis: int
    units: int
    in_units: int
    groups: int
    fan_in: int
    input: str
    preact: str
    output: str
    chain: tuple[str, ...]
    in_feature_axis: int
    out_feature_axis: int
    spatial_in: tuple[int, ...]
    spatial_out: tuple[int, ...]
    depth: int = 0
    feeds: tuple[Edge, ...] = field(default=())
    fed_by: tuple[Edge, ...] = field(default=())
    merges_into: str | None = None
    is_skip: bool = False
    removal_blocker: str | None = None

    @property
    def parameters(self) -> int:
        """Number of weights (bias excluded)."""
        return int(np.prod(self.weight_shape))

    @property
    def kernel_size(self) -> tuple[int, ...]:
        """Spatial kernel of a conv (``()`` for Gemm / MatMul)."""
        return self.weight_shape[2:] if self.op in ("Conv", "ConvTranspose") else ()

    def weight_units(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The (output unit, input unit) of weight index ``(rows, cols)``.

        Args:
            rows: indices along the weight's unit axis.
            cols: indices along the weight's input axis (broadcast against ``rows``).

        Returns:
            ``(output units, input units)``: a grouped convolution offsets the local index
            by the group; a ConvTranspose weight ``(in, out/groups, k...)`` has the local
            outputs on its unit axis.
        """
        groups = max(int(self.groups), 1)
        in_per_group = self.in_units // groups
        if self.op == "ConvTranspose":
            return (cols // in_per_group) * (self.units // groups) + rows, cols
        return rows, (rows // (self.units // groups)) * in_per_group + cols

    def unit_matrix(self, weight: np.ndarray, reduce: str = "any", fill: float = 0) -> np.ndarray:
        """The weight as a ``(units, in_units)`` matrix, reduced over the kernel.

        Args:
            weight: a tensor of :attr:`weight_shape` (the weight itself, masked, or scores).
            reduce: ``any`` (bool: any non-zero), ``sum_abs`` (sum of |w|) or ``mean``.
            fill: the value where a grouped layer has no weight at all (``any``: False).

        Returns:
            The matrix (bool for ``any``, float64 otherwise).
        """
        moved = np.moveaxis(np.asarray(weight), (self.unit_axis, self.in_axis), (0, 1))
        moved = moved.reshape(moved.shape[0], moved.shape[1], -1)
        if reduce == "any":
            compact = (moved != 0).any(axis=2)
        elif reduce == "sum_abs":
            compact = np.abs(moved.astype(np.float64)).sum(axis=2)
        elif reduce == "mean":
            compact = moved.astype(np.float64).mean(axis=2)
        else:
            raise ValueError(f"unit_matrix: reduce must be any, sum_abs or mean, not {reduce!r}")
        if self.groups == 1 and self.op != "ConvTranspose":
            return compact
        full = np.full((self.units, self.in_units), fill, dtype=compact.dtype)
        rows, cols = np.indices(compact.shape)
        out_units, in_units = self.weight_units(rows, cols)
        full[out_units, in_units] = compact
        return full

    def to_dict(self) -> dict:
        """JSON-able description (the schema of ``n2nonnx inspect --json``)."""
        return {
            "name": self.name,
            "op": self.op,
            "index": self.index,
            "depth": self.depth,
            "weight": self.weight,
            "bias": self.bias,
            "weight_shape": list(self.weight_shape),
            "parameters": self.parameters,
            "unit_axis": self.unit_axis,
            "in_axis": self.in_axis,
            "units": self.units,
            "in_units": self.in_units,
            "groups": self.groups,
            "fan_in": self.fan_in,
            "input": self.input,
            "preact": self.preact,
            "output": self.output,
            "chain": list(self.chain),
            "spatial_in": list(self.spatial_in),
            "spatial_out": list(self.spatial_out),
            "feeds": [e.to_dict() for e in self.feeds],
            "fed_by": [e.to_dict() for e in self.fed_by],
            "merges_into": self.merges_into,
            "removal_blocker": self.removal_blocker,
        }
