"""The ``mnn`` target: an MNN model, converted in-process and verified in MNN's runtime.

The converter is MNN's compiled entry point (the ``_tools`` C extension shipped in the
``MNN`` wheel, ``_tools.mnnconvert(argv)``), called directly: MNN's Python wrappers
(its ``tools`` subpackage and the command-line wrappers) send usage logs over the
network and run pip, so n2nonnx never imports them. The converted model runs with
``MNN.nn.load_module_from_file`` (CPU, 1 thread, high precision) on the verification
inputs; it is compared with the input model in onnxruntime, with the same tolerances as
the onnxruntime verification, before anything is written. MNN's converter folds the
constant subgraphs of the compact storage into its own weight storage. The converter runs
in this process, and MNN 3.6.1's aborts it (a C++ exception) on QDQ int8 models, so the
target takes fp32 (and fp16-stored) models only, and refuses contrib or Q/DQ ops before
converting. Needs ``pip install 'n2nonnx[edge]'`` (MNN 3.6.1).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx

from n2nonnx.deployment.targets.base import Package, Target, run_in_batches
from n2nonnx.errors import WorkFailedError

_QDQ = frozenset({"QuantizeLinear", "DequantizeLinear"})
MNN_VERSION = "3.6.1"  # the version the extra pins and the tests ran with


@contextmanager
def _quiet_fds() -> Iterator[None]:
    """Send the C++ code's stdout / stderr chatter to /dev/null meanwhile."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


def convert(onnx_path: Path, mnn_path: Path) -> None:
    """Convert an ONNX file to MNN with the compiled converter (never the Python wrappers).

    Raises:
        WorkFailedError: the converter failed or wrote nothing.
    """
    with _quiet_fds():
        import _tools  # the MNN wheel's compiled converter; the wrappers would phone home

        done = _tools.mnnconvert(
            [
                "mnnconvert",
                "-f",
                "ONNX",
                "--modelFile",
                str(onnx_path),
                "--MNNModel",
                str(mnn_path),
                "--bizCode",
                "n2nonnx",
            ]
        )
    if not done or not mnn_path.exists() or mnn_path.stat().st_size == 0:
        raise WorkFailedError(
            "MNN's converter could not convert the deployed model; deploy it for onnxruntime"
        )


def load(path: Path, inputs: list[str], outputs: list[str], threads: int = 1):
    """An MNN module on ``path`` (CPU, high precision): call ``run(module, feed)``."""
    with _quiet_fds():
        import MNN.expr as expr
        import MNN.nn as nn

        return nn.load_module_from_file(
            str(path),
            inputs,
            outputs,
            thread_num=threads,
            precision_mode=expr.PrecisionMode.High,
        )


def run(module, inputs: list[str], feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """One MNN forward pass on numpy inputs (NCHW in, NCHW out)."""
    import MNN.expr as expr

    values = [
        expr.const(np.ascontiguousarray(feed[name]), list(feed[name].shape), expr.NCHW)
        for name in inputs
    ]
    outputs = module.forward(values)
    result = []
    for output in outputs:
        if len(output.shape) == 4:
            output = expr.convert(output, expr.NCHW)
        result.append(np.array(output.read(), copy=True))
    return result


class MNNTarget(Target):
    """MNN (Alibaba's mobile runtime): a ``.mnn`` file, verified in MNN."""

    name = "mnn"
    suffix = ".mnn"
    runtime = "MNN"
    extra = "edge"
    quantize = (None,)  # MNN 3.6.1's converter aborts the process on QDQ int8 models

    def package(
        self,
        deployed: onnx.ModelProto,
        reference: onnx.ModelProto,
        feeds: Mapping[str, np.ndarray],
        *,
        mode: str,
        rtol: float | None,
        min_agreement: float | None,
        quantize: str | None,
    ) -> Package:
        """Convert to MNN, run it in MNN on ``feeds`` and compare with ``reference``."""
        from n2nonnx.deployment.verify import compare_outputs
        from n2nonnx.runtime import make_session

        foreign = sorted(
            {n.op_type for n in deployed.graph.node if n.domain not in ("", "ai.onnx")}
            | {n.op_type for n in deployed.graph.node if n.op_type in _QDQ}
        )
        if foreign:  # the converter runs in this process and aborts it on these
            raise WorkFailedError(
                f"MNN's converter cannot take {foreign}; deploy for mnn without quantization"
            )
        initializers = {t.name for t in deployed.graph.initializer}
        inputs = [v.name for v in deployed.graph.input if v.name not in initializers]
        outputs = [v.name for v in deployed.graph.output]
        with tempfile.TemporaryDirectory(prefix="n2nonnx-mnn-") as folder:
            source, target = Path(folder) / "model.onnx", Path(folder) / "model.mnn"
            source.write_bytes(deployed.SerializeToString())
            convert(source, target)
            data = target.read_bytes()
            module = load(target, inputs, outputs)
            got = run_in_batches(lambda chunk: run(module, inputs, chunk), feeds)
        expected = make_session(reference, ["CPUExecutionProvider"])
        want = run_in_batches(lambda chunk: expected.run(None, chunk), feeds)
        verification = compare_outputs(want, got, mode=mode, rtol=rtol, min_agreement=min_agreement)
        return Package(
            {"": data},
            verification,
            {"format": "MNN", "mnn_version": _version(), "bytes": len(data)},
            [
                f"mnn                {len(data) / 1024:.1f} KiB .mnn (MNN {_version()}; dense "
                "weights: MNN folds the compact storage)",
                f"verified (MNN)     {verification.describe()}",
            ],
        )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("MNN")
    except PackageNotFoundError:  # pragma: no cover - a build without metadata
        return "unknown"
