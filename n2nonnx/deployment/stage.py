"""The deployment stage: a trained sparse model in, a smaller ONNX model for stock onnxruntime out.

Steps, each exact unless it says otherwise: fold the masks into the weights; remove dead
units (:mod:`~n2nonnx.deployment.dead` through :func:`~n2nonnx.units.remove_units`);
optionally quantize to static int8 (lossy); store sparse weights compactly (exact; with
``weights_fp16`` lossy); verify the result against the input model in onnxruntime.

Around those steps: initializers listed as graph inputs are taken out of them first (IR
3 -> 4 where needed); a target (:mod:`~n2nonnx.deployment.targets`) may change the pruned
model before quantization (TensorRT: the 2:4 pattern, which changes the function; the
result is then verified against the repaired model) and packages the verified model last
(ORT format, MNN: converted and verified again in the target's runtime). ``int4``
quantization stores MatMul / Gemm weights in 4-bit MatMulNBits.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from n2nonnx import metadata
from n2nonnx.errors import InvalidArgumentError
from n2nonnx.model import Model

log = logging.getLogger(__name__)

STORAGE_MODES = ("compact", "dense")


@dataclass
class DeployResult:
    """The deployed model and what deployment did.

    Attributes:
        model: the deployed model (its ``proto`` is what :meth:`save` writes).
        summary: JSON-able numbers: units removed per layer, non-zero weights, stored
            parameters, nodes and file bytes before and after, the verification and, with
            quantization, its report and accuracy before / after.
        verification: the onnxruntime comparison with the input model.
    """

    model: Model
    summary: dict[str, Any]
    verification: Any
    quantization: Any = None
    notes: list[str] = field(default_factory=list)
    package: Any = None

    def save(self, path: str | Path, *, overwrite_source: bool = False) -> Path:
        """Write the deployed model atomically (validated by onnx.checker and onnxruntime).

        For a target other than an ONNX file, its verified files are written (``-o`` and,
        for ``ort-mobile``, the required-operators config beside it).
        """
        from n2nonnx.io import save

        if self.package is None or self.summary.get("target", {}).get("suffix") == ".onnx":
            return save(self.model, path, overwrite_source=overwrite_source)
        from n2nonnx.deployment.targets import write_package

        return write_package(self.package, path)

    def format(self) -> str:
        """A short human-readable report."""
        from n2nonnx.deployment.choice import describe_removal

        s = self.summary
        lines = [
            f"units removed      {s['units']['removed']} of {s['units']['before']} "
            f"(no path to an output: {s['units']['no_output']}, no path from an input: {s['units']['no_input']}, "
            f"constant units kept: {s['units']['kept_constant']})",
            *[
                f"  kept {count} dead units of {name}: {why}"
                for name, (count, why) in s["units"].get("kept_blocked", {}).items()
            ],
            *describe_removal(s.get("removal")),
            f"non-zero weights   {s['weights']['nonzero_before']} -> {s['weights']['nonzero_after']}",
            f"stored parameters  {s['parameters']['before']} -> {s['parameters']['after']}",
            f"nodes              {s['nodes']['before']} -> {s['nodes']['after']}",
            f"file size          {_bytes(s['bytes']['before'])} -> {_bytes(s['bytes']['after'])} "
            f"({s['bytes']['ratio']:.3f}x; storage {s['storage']}{', fp16 values' if s['weights_fp16'] else ''})",
            f"verified           {self.verification.describe()}",
        ]
        if "accuracy" in s:
            lines.append(
                f"accuracy           {s['accuracy']['before']:.4f} -> {s['accuracy']['after']:.4f} "
                f"({s['accuracy']['samples']} test samples)"
            )
        if self.quantization is not None:
            lines.append(f"{self.quantization.mode:<18} {self.quantization.describe()}")
        if s.get("inputs_moved"):
            moved = s["inputs_moved"]
            lines.append(
                f"graph inputs       {len(moved['moved'])} initializers taken out of graph.input "
                f"(IR {moved['ir_before']} -> {moved['ir_after']})"
            )
        for name, reason in s.get("uncompacted", {}).items():
            lines.append(f"left dense         {name}: {reason}")
        lines += self.notes
        return "\n".join(lines)


def _bytes(count: int) -> str:
    return f"{count / 1024:.1f} KiB" if count < 2**20 else f"{count / 2**20:.2f} MiB"


def deploy(
    model: Model,
    *,
    storage: str = "compact",
    weights_fp16: bool = False,
    quantize: str | None = None,
    data: Any = None,
    providers: Sequence[str] | None = None,
    seed: int = 0,
    samples: int = 256,
    rtol: float | None = None,
    min_agreement: float | None = None,
    fallback: bool = True,
    threads: int = 1,
    align: int = 16,
    timing: bool = True,
    pad_to_align: bool = False,
    keep_fp32: Sequence[str] = (),
    target: str = "onnxruntime",
) -> DeployResult:
    """Turn a (pruned, trained) model into a smaller model for stock onnxruntime.

    Args:
        model: the model (not modified); masks and N2NSkip branches are handled.
        storage: ``compact`` (sparse weights as values + uint8 gaps, expanded by a
            subgraph onnxruntime folds at load) or ``dense``.
        weights_fp16: store compacted values in half precision (lossy, ~1e-3 relative).
        quantize: None, ``int8`` (static QDQ, uint8 activations, needs ``data`` for
            calibration) or ``int4`` (4-bit MatMul / Gemm weights in MatMulNBits).
        data: inputs for calibration and verification: a built-in name, an ``.npz`` path,
            arrays ... (see :func:`n2nonnx.data.resolve_data`); None: random inputs.
        providers: onnxruntime execution providers for verification (None: the runtime's
            choice; CUDA / TensorRT where the installed build has them). The deployed file
            does not depend on them.
        seed: seed of random verification inputs and of the constant-unit measurement.
        samples: inputs used for verification.
        rtol: relative tolerance of the verification (default by mode, see
            :data:`n2nonnx.deployment.verify.TOLERANCES`).
        min_agreement: least top-1 agreement of the verification (default by mode).
        fallback: with int8, keep layers in fp32 where int8 measures slower.
        threads: onnxruntime threads for int8 latency measurements.
        align: keep some dead units so that kept widths are multiples of this (0: off;
            see :mod:`~n2nonnx.deployment.align`).
        timing: time no removal, exact and aligned removal in onnxruntime and keep the
            fastest (False: aligned, unmeasured; see :mod:`~n2nonnx.deployment.choice`).
        pad_to_align: also time a variant with zero units added where convolutions read
            channel counts that are not multiples of ``align`` (exact; for models pruned
            elsewhere; see :mod:`~n2nonnx.deployment.padding`).
        keep_fp32: with int8 / int4, layer nodes kept in fp32 (checked in onnxruntime's
            optimised model).
        target: ``onnxruntime``, ``ort-mobile``, ``tensorrt`` or ``mnn``
            (:mod:`~n2nonnx.deployment.targets`).

    Returns:
        The :class:`DeployResult`.

    Raises:
        InvalidArgumentError: unknown storage, quantization mode or target, int8 without
            data, a target whose runtime is not installed, an ``align`` that is not an
            integer >= 0.
        DataError: data that does not fit the model's input.
        VerificationError: the deployed model disagrees with the input model.
    """
    from n2nonnx.deployment.align import check_align
    from n2nonnx.deployment.checks import check_model, check_options, check_runs
    from n2nonnx.deployment.choice import choose_removal
    from n2nonnx.deployment.dead import find_dead_units, random_inputs
    from n2nonnx.deployment.padding import check_pad_to_align
    from n2nonnx.deployment.quantize import QUANTIZATION_MODES, quantize_int8
    from n2nonnx.deployment.storage import CompactTensor, compact_storage, unfolded_expansions
    from n2nonnx.deployment.verify import VerificationError, compare
    from n2nonnx.masks import fold_masks

    if storage not in STORAGE_MODES:
        raise InvalidArgumentError(
            f"unknown storage {storage!r}; choose from {list(STORAGE_MODES)}"
        )
    if quantize is not None and quantize not in QUANTIZATION_MODES:
        raise InvalidArgumentError(
            f"unknown quantization mode {quantize!r}; choose from {list(QUANTIZATION_MODES)} (or none)"
        )
    if quantize == "int8" and data is None:
        raise InvalidArgumentError(
            "--quantize int8 needs calibration data: pass --data (a built-in name or an .npz)"
        )
    check_pad_to_align(pad_to_align, check_align(align))
    check_options(samples=samples, rtol=rtol, min_agreement=min_agreement, providers=providers)
    check_model(model, quantize)
    chosen = _check_target(target, quantize, keep_fp32)
    resolved = _resolve(model, data, seed)
    inputs = model.graph_inputs
    if resolved is not None:
        feeds = {inputs[0].name: resolved.x_test[:samples].numpy()}
    else:
        feeds = random_inputs(model, batch=samples, rng=np.random.default_rng(seed))
    notes = check_runs(model, feeds, providers)  # loads and runs in onnxruntime, finite outputs

    source, moved = _initializers_out_of_inputs(model)
    folded = fold_masks(source)
    removal = choose_removal(
        folded,
        find_dead_units(folded, seed=seed),
        align=align,
        timing=timing,
        seed=seed,
        pad_to_align=pad_to_align,
    )
    dead = removal.dead
    prepared = chosen.prepare(removal.pruned, model.proto, feeds)
    pruned = prepared.model
    proto = pruned.proto
    report = None
    nodes = [la.name for la in sorted(pruned.layers, key=lambda la: -la.parameters)]
    if quantize == "int8":
        calibration = resolved.x_train[: max(64, min(512, len(resolved.x_train)))].numpy()
        proto, report = quantize_int8(
            proto,
            nodes,
            calibration,
            input_name=inputs[0].name,
            fallback=fallback,
            keep_fp32=keep_fp32,
            threads=threads,
        )
    elif quantize == "int4":
        proto, report = _quantize_int4(proto, nodes, keep_fp32)
    records: list[CompactTensor] = []
    uncompacted: dict[str, str] = {}
    if storage == "compact":
        proto, records = compact_storage(proto, fp16=weights_fp16, skipped=uncompacted)
        unfolded = unfolded_expansions(proto, records)
        if unfolded:
            raise VerificationError(
                f"onnxruntime did not fold the compact storage of {unfolded}; deploy with --storage dense"
            )
    proto = _with_record(proto, dead, storage, weights_fp16, quantize, chosen.name)
    mode = quantize or ("fp16" if weights_fp16 and records else "fp32")
    verification = compare(
        prepared.reference,
        proto,
        feeds,
        mode=mode,
        rtol=rtol,
        min_agreement=min_agreement,
        providers=providers,
    )
    if not verification.passed:
        raise VerificationError(
            f"the deployed model disagrees with the input model: {verification.describe()}; nothing was "
            "written. Loosen --rtol / --min-agreement only if that loss is acceptable"
        )
    deployed = model.with_proto(proto)
    summary = _summary(
        model, folded, pruned, proto, dead, storage, weights_fp16, quantize, records, verification
    )
    summary["removal"] = removal.to_dict()
    if report is not None:
        summary["quantization"] = report.to_dict()
    if resolved is not None:
        summary["accuracy"] = _accuracy(model.proto, proto, resolved, providers)
    summary["uncompacted"] = uncompacted
    if moved.moved or moved.kept:
        summary["inputs_moved"] = moved.to_dict()
    package = _package(chosen, prepared, proto, feeds, summary, mode, rtol, min_agreement, quantize)
    if notes:
        summary["notes"] = notes
    return DeployResult(
        deployed, summary, verification, report, [*prepared.lines, *package.lines, *notes], package
    )


def _check_target(target: str, quantize: str | None, keep_fp32: Sequence[str]):
    """The target, once it and the options it is given are known to fit."""
    from n2nonnx.deployment.targets import get_target

    if keep_fp32 and quantize is None:
        raise InvalidArgumentError("--keep-fp32 needs --quantize int8 or int4")
    chosen = get_target(target)
    chosen.check(quantize)
    return chosen


def _initializers_out_of_inputs(model: Model):
    """The model with initializers taken out of graph.input, and what moved."""
    from n2nonnx.deployment.storage import initializers_out_of_inputs

    proto, moved = initializers_out_of_inputs(model.proto)
    return (model.with_proto(proto) if moved.moved else model), moved


def _quantize_int4(proto, nodes, keep_fp32):
    from n2nonnx.deployment.quantize import quantize_int4

    return quantize_int4(proto, nodes, keep_fp32=keep_fp32)


def _package(chosen, prepared, proto, feeds, summary, mode, rtol, min_agreement, quantize):
    """The target's files of the verified model, verified in its runtime; summary["target"]."""
    from n2nonnx.deployment.verify import VerificationError

    package = chosen.package(
        proto,
        prepared.reference,
        feeds,
        mode=mode,
        rtol=rtol,
        min_agreement=min_agreement,
        quantize=quantize,
    )
    if package.verification is not None and not package.verification.passed:
        raise VerificationError(
            f"the {chosen.name} model disagrees with the input model in its runtime: "
            f"{package.verification.describe()}; nothing was written"
        )
    summary["target"] = {
        "name": chosen.name,
        "suffix": chosen.suffix,
        **prepared.info,
        **package.info,
        "verification": None if package.verification is None else package.verification.to_dict(),
    }
    return package


def _resolve(model: Model, data: Any, seed: int):
    if data is None:
        return None
    from n2nonnx.data import resolve_data

    info = model.graph_inputs[0]
    return resolve_data(data, input_shape=info.shape, seed=seed, input_name=info.name)


def _with_record(proto, dead, storage, weights_fp16, quantize, target) -> onnx.ModelProto:
    record = {
        "target": target,
        "storage": storage,
        "weights_fp16": weights_fp16,
        "quantize": quantize,
        "units_removed": {name: len(units) for name, units in dead.remove.items()},
        "biases_folded": sorted(dead.bias_deltas),
    }
    metadata.append_stage(proto, "deploy", **record)
    return proto


def _nonzero_weights(model: Model) -> int:
    return int(sum(np.count_nonzero(model.effective_weight(layer)) for layer in model.layers))


def _summary(
    model, folded, pruned, proto, dead, storage, weights_fp16, quantize, records, verification
) -> dict:
    before_units = sum(layer.units for layer in model.layers)
    nibbles = {node.input[1] for node in proto.graph.node if node.op_type == "MatMulNBits"}
    stored_after = sum(
        int(np.prod(t.dims)) * (2 if t.name in nibbles else 1)
        for t in proto.graph.initializer
        if t.name in nibbles
        or t.data_type
        in (
            onnx.TensorProto.FLOAT,
            onnx.TensorProto.FLOAT16,
            onnx.TensorProto.DOUBLE,
            onnx.TensorProto.INT8,
        )
    )
    before_bytes, after_bytes = model.proto.ByteSize(), proto.ByteSize()
    return {
        "units": {
            "before": before_units,
            "removed": dead.count,
            "no_output": int(sum(len(u) for u in dead.no_output.values())),
            "no_input": int(sum(len(u) for u in dead.no_input.values())),
            "kept_constant": int(sum(len(u) for u in dead.kept_constant.values())),
            "per_layer": {name: len(units) for name, units in dead.remove.items()},
            "kept_blocked": {name: list(kept) for name, kept in dead.blocked.items()},
        },
        "weights": {
            "nonzero_before": _nonzero_weights(folded),
            "nonzero_after": _nonzero_weights(pruned),
        },
        "weights_fp16": bool(weights_fp16),
        "parameters": {"before": model.parameter_count, "after": stored_after},
        "nodes": {
            "before": len(model.proto.graph.node),
            "after": len(proto.graph.node),
            "after_fold": len(pruned.proto.graph.node),
        },
        "bytes": {
            "before": before_bytes,
            "after": after_bytes,
            "ratio": after_bytes / max(before_bytes, 1),
        },
        "storage": storage,
        "compacted_tensors": len(records),
        "quantize": quantize,
        "verification": verification.to_dict(),
    }


def _accuracy(reference, deployed, data, providers) -> dict:
    from n2nonnx.runtime import accuracy, make_session

    x, y = data.x_test.numpy(), data.y_test.numpy()
    return {
        "before": accuracy(make_session(reference, providers), x, y),
        "after": accuracy(make_session(deployed, providers), x, y),
        "samples": len(x),
    }
