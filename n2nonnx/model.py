"""The model object every stage passes along: a normalised ModelProto plus its layer view."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from n2nonnx import metadata
from n2nonnx.graph.index import GraphIndex, TensorInfo
from n2nonnx.graph.layers import Layer, find_layers
from n2nonnx.graph.masking import MaskSite, find_mask_sites
from n2nonnx.graph.normalize import default_opset
from n2nonnx.tags import replace_tensor


class Model:
    """A normalised ONNX model (see :func:`n2nonnx.load`) with its layer view.

    The protobuf is the single source of truth; the index and layers are derived from
    it lazily. Treat ``proto`` as read-only: stages return new models
    (:meth:`with_proto`, :meth:`with_initializers`) instead of editing one in place.

    Args:
        proto: the normalised model.
        source: the file it was loaded from, if any (``save`` refuses to overwrite it).
    """

    def __init__(self, proto: onnx.ModelProto, source: Path | None = None) -> None:
        self.proto = proto
        self.source = source
        # External data files of the source (save() refuses to overwrite them).
        self.external_files: frozenset[Path] = frozenset()

    def __repr__(self) -> str:
        where = f" from {self.source}" if self.source else ""
        return f"<n2nonnx.Model{where}: opset {self.opset}, {len(self.proto.graph.node)} nodes>"

    @cached_property
    def index(self) -> GraphIndex:
        """Producers, consumers, initializers and shapes of the graph."""
        return GraphIndex(self.proto)

    @cached_property
    def layers(self) -> list[Layer]:
        """The prunable layers in topological order (see :mod:`n2nonnx.graph.layers`)."""
        return find_layers(self.index)

    @property
    def opset(self) -> int:
        """The default-domain opset."""
        return default_opset(self.proto)

    def layer(self, name: str) -> Layer:
        """The layer called ``name`` (node name), or the layer whose weight is ``name``."""
        for layer in self.layers:
            if name in (layer.name, layer.weight):
                return layer
        raise KeyError(f"no layer named {name!r}; layers: {[layer.name for layer in self.layers]}")

    @property
    def graph_inputs(self) -> list[TensorInfo]:
        """The graph's data inputs (initializers listed as inputs excluded)."""
        return [self.index.infos[name] for name in self.index.graph_inputs]

    @property
    def graph_outputs(self) -> list[TensorInfo]:
        """The graph's outputs, in graph order."""
        return [self.index.infos[name] for name in self.index.graph_outputs]

    @property
    def initializer_names(self) -> list[str]:
        """The initializers' names, in graph order."""
        return [i.name for i in self.proto.graph.initializer]

    def initializer(self, name: str) -> np.ndarray:
        """The value of initializer ``name`` (read-only array)."""
        if name not in self.index.initializers:
            raise KeyError(f"no initializer named {name!r}")
        return self.index.array(name)

    @cached_property
    def mask_sites(self) -> dict[str, MaskSite]:
        """Masked weight -> where its mask lives in the graph (see :mod:`n2nonnx.graph.masking`)."""
        return find_mask_sites(self.proto.graph)

    def mask(self, weight: str) -> np.ndarray | None:
        """The mask of initializer ``weight`` (0/1 in the weight's dtype), or None if unmasked."""
        site = self.mask_sites.get(weight)
        if site is None:
            return None
        return np.asarray(self.initializer(site.mask)).astype(self.initializer(weight).dtype)

    def effective_weight(self, layer: Layer | str) -> np.ndarray:
        """The weight a layer really uses: ``weight * mask`` when masked."""
        weight = layer.weight if isinstance(layer, Layer) else layer
        value = self.initializer(weight)
        mask = self.mask(weight)
        return value if mask is None else value * mask

    @property
    def metadata(self) -> dict[str, Any]:
        """The n2nonnx provenance document (see :mod:`n2nonnx.metadata`)."""
        return metadata.read(self.proto)

    @property
    def parameter_count(self) -> int:
        """Elements in all floating-point initializers except masks."""
        total = 0
        mask_names = {site.mask for site in self.mask_sites.values()}
        for tensor in self.proto.graph.initializer:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
            if np.issubdtype(dtype, np.floating) and tensor.name not in mask_names:
                total += int(np.prod(tensor.dims))
        return total

    def with_proto(self, proto: onnx.ModelProto) -> Model:
        """A new model around ``proto``, remembering the same source file."""
        model = Model(proto, source=self.source)
        model.external_files = self.external_files
        return model

    def with_initializers(self, values: Mapping[str, np.ndarray]) -> Model:
        """A copy whose named initializers hold new values (same names, dtypes and shapes)."""
        proto = onnx.ModelProto()
        proto.CopyFrom(self.proto)
        by_name = {t.name: t for t in proto.graph.initializer}
        for name, value in values.items():
            old = by_name.get(name)
            if old is None:
                raise KeyError(f"no initializer named {name!r}")
            dtype = onnx.helper.tensor_dtype_to_np_dtype(old.data_type)
            array = np.asarray(value, dtype=dtype)
            if tuple(array.shape) != tuple(old.dims):
                raise ValueError(f"initializer {name!r}: shape {array.shape} != {tuple(old.dims)}")
            replace_tensor(old, numpy_helper.from_array(array, name))
        return self.with_proto(proto)
