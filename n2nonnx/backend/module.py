"""OnnxModule: an ``nn.Module`` that executes an ONNX graph with PyTorch and trains its weights.

Every initializer becomes an ``nn.Parameter`` (trainable, see :mod:`trainability`) or a
buffer. Each node is turned into a kernel once, at construction, by the op registry; the
forward pass runs the kernels in graph order over a flat list of tensor slots. Nodes that
depend only on constants (Constant nodes, integer initializers) are evaluated once at
construction (:mod:`~n2nonnx.backend.folding`). Trained values go back into the same ONNX
initializers with :meth:`OnnxModule.write_back` (:mod:`~n2nonnx.backend.write_back`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numpy as np
import onnx
import torch

from n2nonnx.backend.aliasing import aliased_running_stats
from n2nonnx.backend.fixed_batch import chunked_size, holds_the_batch, run_in_chunks
from n2nonnx.backend.folding import MAX_CONSTANT_ELEMENTS, as_numpy, can_fold, fold
from n2nonnx.backend.registry import resolve
from n2nonnx.backend.spec import NodeSpec
from n2nonnx.backend.tensors import (
    FLOAT_ONNX,
    as_proto,
    coerce,
    declared_dtype,
    safe_key,
    to_onnx_array,
    to_torch,
)
from n2nonnx.backend.trainability import TrainableRule, resolve_trainable
from n2nonnx.backend.write_back import write_back
from n2nonnx.errors import DataError, InvalidArgumentError, InvalidModelError, UnsupportedOpError
from n2nonnx.graph.batch_shapes import fixed_batch
from n2nonnx.graph.masking import find_mask_sites


class _ModeFlag:
    """A mutable train/eval flag; kernels call it to read the mode.

    Copies of a module share their kernels (functions are not deep-copied), so they must
    share the flag too: every forward sets it before running the kernels.
    """

    training = False

    def __call__(self) -> bool:
        return self.training

    def __deepcopy__(self, memo: dict[int, Any]) -> _ModeFlag:
        return self


def _build_kernel(
    node: onnx.NodeProto,
    inputs: list[str],
    opsets: dict[str, int],
    known: set[str],
    constants: dict[str, np.ndarray],
    mode: _ModeFlag,
) -> Callable[..., Any]:
    """The kernel the op registry builds for ``node``, after checking its domain and inputs.

    Args:
        node: the node.
        inputs: its input names (after running-stat renames).
        opsets: the model's opset version by domain (``""`` for ai.onnx).
        known: the tensors produced so far (graph inputs, initializers, earlier nodes).
        constants: build-time values by tensor name.
        mode: the train/eval flag the kernel reads.

    Returns:
        The kernel: a function of the node's runtime input tensors.

    Raises:
        UnsupportedOpError: the node's domain is not imported or its op has no converter.
        InvalidModelError: the node reads a tensor nothing produces before it.
    """
    domain = "" if node.domain == "ai.onnx" else node.domain
    if domain not in opsets:
        raise UnsupportedOpError(
            f"node {node.name!r} (op {node.op_type}) uses domain {domain!r}, which the model does "
            "not import; list the supported ops with n2nonnx.backend.supported_ops()"
        )
    builder = resolve(node.op_type, domain, opsets[domain], node.name)
    for name in inputs:
        if name not in known:
            raise InvalidModelError(
                f"node {node.name!r} ({node.op_type}) reads {name!r}, which no node, input or "
                "initializer produces; toposort the graph or fix the edge"
            )
    return builder(NodeSpec(node, opsets[domain], constants, mode))


class _SlotTable:
    """Tensor name -> index in the flat slot list the forward pass runs over (slot 0 is ``""``)."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {"": 0}

    def __call__(self, name: str) -> int:
        return self.index.setdefault(name, len(self.index))


# a compiled node: (kernel, input slots, output slot(s): one int, or a tuple for multi-output
# kernels, slots freed after it runs)
_Step = tuple[Callable[..., Any], tuple[int, ...], int | tuple[int, ...], tuple[int, ...]]


class OnnxModule(torch.nn.Module):
    """Run and train an ONNX model's graph as a PyTorch module.

    Args:
        model: an ``onnx.ModelProto`` or any object with a ``.proto`` ModelProto.
        trainable: ``None`` for the default rule (weights, biases, scales, shifts); a
            callable ``name -> bool``; or ``dict(include=[...], exclude=[...])`` of glob or
            regex patterns that widen / narrow the default (see :mod:`trainability`).
        dtype: if given, floating-point initializers are held in this torch dtype (e.g.
            ``torch.float64``); :meth:`initializer_values` still returns the ONNX dtypes.

    Raises:
        UnsupportedOpError: a node has no converter (the message names it).
        InvalidModelError: the graph reads a tensor nothing produces.
    """

    def __init__(
        self, model: Any, trainable: TrainableRule = None, dtype: torch.dtype | None = None
    ):
        super().__init__()
        proto = as_proto(model)
        graph = proto.graph
        self._onnx_types: dict[str, int] = {t.name: t.data_type for t in graph.initializer}
        self.initializer_names: list[str] = [t.name for t in graph.initializer]
        self._trainable = resolve_trainable(graph, trainable)
        #: masked weight -> its mask initializer (see :mod:`n2nonnx.graph.masking`)
        self.mask_of: dict[str, str] = {w: site.mask for w, site in find_mask_sites(graph).items()}
        # the train/eval flag kernels read: set at the start of every forward, so copies of
        # this module (deepcopy shares the kernels) always see the mode of the one running
        self._mode = _ModeFlag()
        self._keys: dict[str, str] = {}
        taken: set[str] = set(dir(self))
        # the build-time values NodeSpec.const exposes, and those safe to fold further
        constants, foldable = self._register_initializers(graph, dtype, taken)
        self._register_aliased_stats(graph, taken)
        slot = _SlotTable()
        self._bind_graph_io(graph, dtype, slot)
        steps = self._compile_nodes(proto, slot, constants, foldable, taken)
        self._output_slots = [slot.index[n] for n in self.output_names]
        self._steps = self._with_slot_release(steps)
        self._n_slots = len(slot.index)
        #: the batch the exporter baked into the graph (None: free); see :mod:`fixed_batch`
        self.fixed_batch: int | None = fixed_batch(graph)
        inputs = {i.name: i for i in graph.input}
        self._input_ranks = [len(inputs[n].type.tensor_type.shape.dim) for n in self.input_names]
        self._batch_bound: bool | None = None  # whether it runs only at fixed_batch (probed)

    def _register_initializers(
        self, graph: onnx.GraphProto, dtype: torch.dtype | None, taken: set[str]
    ) -> tuple[dict[str, np.ndarray], set[str]]:
        """Register every initializer as a Parameter (trainable) or a buffer.

        Args:
            graph: the model's graph.
            dtype: the torch dtype floating initializers are held in, or ``None`` to keep theirs.
            taken: attribute names already used on this module (extended in place).

        Returns:
            The small non-mask buffers as build-time constants (name -> array), and the names
            among them that are safe to fold further (the non-floating ones).
        """
        mask_names = set(self.mask_of.values())
        constants: dict[str, np.ndarray] = {}
        foldable: set[str] = set()
        for tensor in graph.initializer:
            value = to_torch(tensor)
            if dtype is not None and tensor.data_type in FLOAT_ONNX:
                value = value.to(dtype)
            key = safe_key(tensor.name, taken)
            self._keys[tensor.name] = key
            if tensor.name in self._trainable:
                self.register_parameter(key, torch.nn.Parameter(value))
                continue
            self.register_buffer(key, value)
            if tensor.name not in mask_names and value.numel() <= MAX_CONSTANT_ELEMENTS:
                constants[tensor.name] = as_numpy(value)
                if tensor.data_type not in FLOAT_ONNX:
                    foldable.add(tensor.name)
        return constants, foldable

    def _register_aliased_stats(self, graph: onnx.GraphProto, taken: set[str]) -> None:
        """Give private buffers to BatchNorm running stats aliased to another initializer.

        The legacy exporter dedups equal tensors, so a running stat may reach its
        BatchNormalization through an Identity of some other initializer.
        """
        self._stat_sources, self._stat_renames = aliased_running_stats(
            graph, set(self._keys), self._trainable
        )
        for name, source in self._stat_sources.items():
            key = safe_key("stat_" + name, taken)
            self._keys[name] = key
            self._onnx_types[name] = self._onnx_types[source]
            self.register_buffer(key, self.tensor(source).detach().clone())

    def _bind_graph_io(
        self, graph: onnx.GraphProto, dtype: torch.dtype | None, slot: _SlotTable
    ) -> None:
        """Assign slots to the graph inputs and initializers and record the input dtypes.

        Args:
            graph: the model's graph.
            dtype: the torch dtype floating initializers are held in (inputs follow it).
            slot: the slot table (extended in place).
        """
        input_names = [i.name for i in graph.input if i.name not in self._keys]
        self.input_names: list[str] = input_names
        self.output_names: list[str] = [o.name for o in graph.output]
        self._input_slots = [slot(n) for n in input_names]
        self._input_dtypes = [
            declared_dtype(i, dtype) for i in graph.input if i.name not in self._keys
        ]
        # a floating initializer whose dtype reveals a later module.half() / .double()
        self._probe = next(
            (
                (self._keys[t.name], t.name in self._trainable)
                for t in graph.initializer
                if t.data_type in FLOAT_ONNX
            ),
            None,
        )
        self._probe_dtype = None
        if self._probe is not None:
            self._probe_dtype = self._held(*self._probe).dtype
        self._init_slots = [
            (slot(n), self._keys[n], n in self._trainable)
            for n in self.initializer_names + list(self._stat_sources)
        ]
        default_inputs = {i.name for i in graph.input if i.name in self._keys}
        self._default_inputs = {n: slot.index[n] for n in default_inputs}

    def _compile_nodes(
        self,
        proto: onnx.ModelProto,
        slot: _SlotTable,
        constants: dict[str, np.ndarray],
        foldable: set[str],
        taken: set[str],
    ) -> list[tuple[Callable[..., Any], tuple[int, ...], tuple[int, ...]]]:
        """Turn every node into a kernel; evaluate the constant ones now, as buffers.

        Args:
            proto: the model.
            slot: the slot table (extended in place).
            constants: build-time values by tensor name (extended with folded outputs).
            foldable: names of constants safe to fold further (extended in place).
            taken: attribute names already used on this module (extended in place).

        Returns:
            The nodes left to run per forward, in graph order, as (kernel, input slots,
            output slots).

        Raises:
            UnsupportedOpError: a node's domain is not imported or its op has no converter.
            InvalidModelError: a node or graph output reads a tensor nothing produces.
        """
        graph = proto.graph
        opsets = {
            ("" if o.domain == "ai.onnx" else o.domain): o.version for o in proto.opset_import
        }
        opsets.setdefault("", onnx.defs.onnx_opset_version())
        self._folded: list[tuple[int, str]] = []
        steps: list[tuple[Callable[..., Any], tuple[int, ...], tuple[int, ...]]] = []
        known = set(slot.index)
        for node_index, node in enumerate(graph.node):
            inputs = [self._stat_renames.get((node_index, i), n) for i, n in enumerate(node.input)]
            if node.op_type == "Identity" and node.output[0] in self._stat_sources:
                known.add(node.output[0])
                continue
            kernel = _build_kernel(node, inputs, opsets, known, constants, self._mode)
            known.update(node.output)
            if can_fold(node, inputs, foldable):
                self._fold(node, kernel, inputs, slot, constants, foldable, taken)
                continue
            ins, outs = tuple(slot(n) for n in inputs), tuple(slot(n) for n in node.output)
            steps.append((kernel, ins, outs))
        for name in self.output_names:
            if name not in known:
                raise InvalidModelError(
                    f"graph output {name!r} is produced by no node, input or initializer"
                )
        return steps

    def _fold(
        self,
        node: onnx.NodeProto,
        kernel: Callable[..., Any],
        inputs: list[str],
        slot: _SlotTable,
        constants: dict[str, np.ndarray],
        foldable: set[str],
        taken: set[str],
    ) -> None:
        """Run a node whose inputs are all constant once (see :mod:`folding`); its outputs become buffers."""
        for name, value in fold(node, kernel, inputs, constants, foldable):
            key = safe_key("const_" + name, taken)
            self.register_buffer(key, value, persistent=False)
            self._folded.append((slot(name), key))

    def _with_slot_release(
        self, steps: list[tuple[Callable[..., Any], tuple[int, ...], tuple[int, ...]]]
    ) -> list[_Step]:
        """Steps that drop each intermediate from the slot list after its last reader.

        Keeps peak memory down in eval; graph outputs and the empty slot are never dropped.
        """
        last_use: dict[int, int] = {}
        for position, (_, ins, _) in enumerate(steps):
            for index in ins:
                last_use[index] = position
        keep = set(self._output_slots) | {0}
        dead: list[list[int]] = [[] for _ in steps]
        for index, position in last_use.items():
            if index not in keep:
                dead[position].append(index)
        return [
            (k, ins, outs[0] if len(outs) == 1 else outs, tuple(dead[p]))
            for p, (k, ins, outs) in enumerate(steps)
        ]

    # ------------------------------------------------------------------ running

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Run the graph.

        A graph exported with a fixed batch runs on other batch sizes in chunks of its
        batch (:func:`~n2nonnx.backend.fixed_batch.run_in_chunks`).

        Args:
            *args: input tensors (or arrays) in graph-input order.
            **kwargs: inputs by graph input name.

        Returns:
            The output tensor if the graph has one output, else a tuple in graph order.

        Raises:
            DataError: an input is missing or unknown.
        """
        size = chunked_size(self.fixed_batch, self._input_ranks, self.input_names, args, kwargs)
        if size is not None and self.fixed_batch is not None and self._holds_batch(args, kwargs):
            return run_in_chunks(self._run, self.fixed_batch, size, self.output_names, args, kwargs)
        return self._run(*args, **kwargs)

    def _holds_batch(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """Whether the fixed batch is baked into the graph (probed once, in eval mode)."""
        if self._batch_bound is None and self.fixed_batch is not None:
            training = self.training
            self.training = False
            try:
                with torch.no_grad():
                    self._batch_bound = holds_the_batch(self._run, self.fixed_batch, args, kwargs)
            finally:
                self.training = training
        return bool(self._batch_bound)

    def _run(self, *args: Any, **kwargs: Any) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """One pass of the graph (see :meth:`forward`)."""
        self._mode.training = self.training
        env: list[Any] = [None] * self._n_slots
        params = self._parameters
        buffers = self._buffers
        for index, key, is_param in self._init_slots:
            env[index] = params[key] if is_param else buffers[key]
        for index, key in self._folded:
            env[index] = buffers[key]
        if len(args) > len(self._input_slots):
            raise DataError(
                f"model takes {len(self._input_slots)} inputs {self.input_names}, got {len(args)}"
            )
        wanted_types, device = self._wanted_input_types()
        for index, wanted, value in zip(self._input_slots, wanted_types, args, strict=False):
            env[index] = coerce(value, wanted, device)
        if kwargs:
            self._bind_keywords(env, kwargs, wanted_types, device)
        for index, name in zip(
            self._input_slots[len(args) :], self.input_names[len(args) :], strict=True
        ):
            if env[index] is None:
                raise DataError(f"missing model input {name!r}; inputs are {self.input_names}")
        for kernel, ins, out, dead in self._steps:
            result = kernel(*[env[i] for i in ins])
            if isinstance(out, tuple):
                if isinstance(result, torch.Tensor):
                    result = (result,)
                for index, value in zip(out, result, strict=False):
                    env[index] = value
            else:
                env[out] = result[0] if type(result) is tuple else result
            for index in dead:
                env[index] = None
        if len(self._output_slots) == 1:
            return env[self._output_slots[0]]
        return tuple(env[i] for i in self._output_slots)

    def _wanted_input_types(self) -> tuple[list[torch.dtype | None], torch.device | None]:
        """The dtypes to cast floating inputs to, and the device the module's tensors live on.

        The dtypes are the declared float input types, or the module's float type after
        ``.half()`` / ``.double()``.
        """
        if self._probe is None:
            return self._input_dtypes, None
        reference = self._held(*self._probe)
        if reference.dtype == self._probe_dtype:
            return self._input_dtypes, reference.device
        return [
            wanted if wanted is None or not wanted.is_floating_point else reference.dtype
            for wanted in self._input_dtypes
        ], reference.device

    def _bind_keywords(
        self,
        env: list[Any],
        kwargs: dict[str, Any],
        wanted_types: list,
        device: torch.device | None,
    ) -> None:
        positions = dict(
            zip(self.input_names, zip(self._input_slots, wanted_types, strict=True), strict=True)
        )
        positions.update({name: (index, None) for name, index in self._default_inputs.items()})
        for name, value in kwargs.items():
            if name not in positions:
                raise DataError(f"unknown model input {name!r}; inputs are {self.input_names}")
            index, wanted = positions[name]
            env[index] = coerce(value, wanted, device)

    # ------------------------------------------------------------------ initializers

    def tensor(self, name: str) -> torch.Tensor:
        """The Parameter or buffer holding initializer ``name``.

        Args:
            name: the ONNX initializer name.

        Returns:
            The live tensor (edit it in place to change the model).

        Raises:
            InvalidArgumentError: no initializer has that name.
        """
        key = self._keys.get(name)
        if key is None:
            raise InvalidArgumentError(
                f"no initializer named {name!r}; see OnnxModule.initializer_names"
            )
        return self._held(key, name in self._trainable)

    def _held(self, key: str, is_param: bool) -> torch.Tensor:
        """The Parameter (``is_param``) or buffer registered under attribute ``key``."""
        # torch types these tables' values Optional (register_parameter(name, None) is
        # allowed); this module never registers None
        table = self._parameters if is_param else self._buffers
        return cast(torch.Tensor, table[key])

    def parameter_key(self, name: str) -> str:
        """The attribute name under which initializer ``name`` is registered (as in ``named_parameters``)."""
        self.tensor(name)
        return self._keys[name]

    def named_onnx_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        """(ONNX initializer name, Parameter) for every trainable initializer, in graph order.

        Useful for optimizer parameter groups chosen by ONNX name (e.g. no weight decay on
        biases); ``named_parameters()`` gives the same tensors under torch-safe keys.
        """
        # torch types _parameters' values Optional; this module never registers None
        return [
            (name, cast(torch.nn.Parameter, self._parameters[self._keys[name]]))
            for name in self.initializer_names
            if name in self._trainable
        ]

    def is_trainable(self, name: str) -> bool:
        """True if initializer ``name`` is an ``nn.Parameter``."""
        self.tensor(name)
        return name in self._trainable

    def masks(self) -> dict[str, torch.Tensor]:
        """Weight initializer name -> its mask buffer (bool or 0/1), for every masked weight."""
        return {weight: self.tensor(mask) for weight, mask in self.mask_of.items()}

    @torch.no_grad()
    def apply_masks_(self) -> None:
        """Zero every masked weight where its mask is zero (``W.mul_(mask)``), in place."""
        for weight, mask in self.masks().items():
            target = self.tensor(weight)
            target.mul_(mask.to(target.dtype))

    def initializer_values(self) -> dict[str, np.ndarray]:
        """Current values of all initializers, in their original ONNX dtypes, by name.

        Returns:
            Every initializer in graph order (parameters, running statistics, masks,
            shapes), followed by any BatchNorm running statistics that the exporter had
            aliased to another initializer through Identity nodes (keyed by their tensor
            name; :meth:`write_back` turns those into initializers once they have moved).
        """
        names = self.initializer_names + list(self._stat_sources)
        return {name: to_onnx_array(self.tensor(name), self._onnx_types[name]) for name in names}

    def write_back(self, model: Any) -> onnx.ModelProto:
        """A copy of ``model``'s proto with every initializer holding this module's current value.

        See :mod:`n2nonnx.backend.write_back`.

        Args:
            model: the ModelProto this module was built from (or an object with ``.proto``).

        Returns:
            A new ModelProto; node names, initializer names, order and dtypes are unchanged.
            Initializers this module does not know are copied unchanged.
        """
        return write_back(
            as_proto(model),
            self.initializer_values(),
            self.tensor,
            self._stat_sources,
            self._stat_renames,
        )
