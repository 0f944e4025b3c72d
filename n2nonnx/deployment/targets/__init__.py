"""Deployment targets: what runtime the deployed model is for, and the files written for it.

A target names the file format (``-o`` must end with its suffix), the optional extra that
installs its runtime, an optional step on the pruned model before quantization and storage
(:meth:`Target.prepare`: TensorRT's 2:4 pattern) and the packaging of the verified ONNX
model into its files (:meth:`Target.package`: converted, run in the target's runtime on
the verification inputs and compared with the input model before anything is written).

============  ========  ==========================================================
target        suffix    what is written
============  ========  ==========================================================
onnxruntime   .onnx     the deployed ONNX model (the default)
ort-mobile    .ort      onnxruntime's ORT format, plus its required-operators config
tensorrt      .onnx     ONNX with 2:4-sparse weights; TensorRT provider options in the summary
mnn           .mnn      an MNN model (``pip install n2nonnx[edge]``)
============  ========  ==========================================================
"""

from __future__ import annotations

from n2nonnx.deployment.targets.base import (
    Package,
    Prepared,
    Target,
    check_output_suffix,
    output_paths,
    run_in_batches,
    write_package,
)
from n2nonnx.deployment.targets.mnn import MNNTarget
from n2nonnx.deployment.targets.onnxrt import OnnxRuntimeTarget
from n2nonnx.deployment.targets.ort_mobile import OrtMobileTarget
from n2nonnx.deployment.targets.tensorrt import TensorRTTarget
from n2nonnx.errors import InvalidArgumentError

__all__ = [
    "TARGETS",
    "TARGET_NAMES",
    "Package",
    "Prepared",
    "Target",
    "check_output_suffix",
    "get_target",
    "output_paths",
    "run_in_batches",
    "write_package",
]

TARGETS: dict[str, Target] = {
    target.name: target
    for target in (OnnxRuntimeTarget(), OrtMobileTarget(), TensorRTTarget(), MNNTarget())
}
TARGET_NAMES = tuple(TARGETS)


def get_target(name: str) -> Target:
    """The target called ``name``.

    Raises:
        InvalidArgumentError: no such target.
    """
    if name not in TARGETS:
        raise InvalidArgumentError(f"unknown target {name!r}; choose from {list(TARGET_NAMES)}")
    return TARGETS[name]
