"""Conformance: the ONNX project's own backend node test cases, run through OnnxModule.

Every case whose ops are all registered runs in eval mode and is compared with the expected
outputs at the case's own rtol / atol (and exact dtype). Single-node cases count towards
their op; function-expanded multi-node cases count towards the row ``(expanded)``. Each
registered op must pass at least 95% of its cases. The per-op table is printed in the
terminal summary (independent of ``-s``).
"""

from __future__ import annotations

import collections
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from n2nonnx.backend import OnnxModule, supported_ops

REQUIRED_PASS_RATE = 0.95
EXPANDED = "(expanded)"

# element types torch has no tensor type for: cases reading or producing them are excluded
TP = onnx.TensorProto
_TORCH_LACKS = {
    TP.STRING: "string tensors",
    TP.COMPLEX64: "complex (no ONNX op here uses it)",
    TP.COMPLEX128: "complex (no ONNX op here uses it)",
    TP.FLOAT8E4M3FN: "float8",
    TP.FLOAT8E4M3FNUZ: "float8",
    TP.FLOAT8E5M2: "float8",
    TP.FLOAT8E5M2FNUZ: "float8",
    TP.UINT4: "4-bit integers",
    TP.INT4: "4-bit integers",
}
for _extra in ("FLOAT4E2M1", "FLOAT8E8M0", "UINT2", "INT2"):
    if hasattr(TP, _extra):
        _TORCH_LACKS[getattr(TP, _extra)] = "sub-byte / micro-scaling float types"

# cases excluded by name, with the reason
EXCLUDED = {
    "test_training_dropout": "training-mode Dropout draws ONNX's reference RNG stream (numpy seed)",
    "test_training_dropout_default": "training-mode Dropout draws ONNX's reference RNG stream",
    "test_training_dropout_mask": "training-mode Dropout draws ONNX's reference RNG stream",
    "test_training_dropout_default_mask": "training-mode Dropout draws ONNX's reference RNG stream",
    "test_resize_downsample_scales_linear_align_corners": (
        "onnxruntime, the project's numeric oracle, uses the integer output size for align_corners "
        "(the ONNX reference uses scale * size); the backend follows onnxruntime"
    ),
    "test_resize_downsample_scales_cubic_align_corners": (
        "onnxruntime, the project's numeric oracle, uses the integer output size for align_corners "
        "(the ONNX reference uses scale * size); the backend follows onnxruntime"
    ),
    "test_identity_sequence": "sequence types are not tensors",
    "test_identity_opt": "optional types are not tensors",
}


class _Excluded(Exception):
    """The case needs something the torch backend deliberately does not model."""


def _exotic_reason(model: onnx.ModelProto) -> str | None:
    """Why a model is out of scope (sequence/optional values, element types torch lacks)."""
    graph = model.graph
    for value in list(graph.input) + list(graph.output):
        kind = value.type.WhichOneof("value")
        if kind != "tensor_type":
            return f"{kind} values are not tensors"
        if value.type.tensor_type.elem_type in _TORCH_LACKS:
            return _TORCH_LACKS[value.type.tensor_type.elem_type]
    for node in graph.node:
        for attr in node.attribute:
            if attr.name == "to" and attr.i in _TORCH_LACKS:
                return _TORCH_LACKS[attr.i]
    return None


def _as_numpy(value) -> np.ndarray:
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if value is None or isinstance(value, list | dict):
        raise _Excluded("sequence / optional value")
    return np.asarray(value)


def _to_torch(value) -> torch.Tensor:
    array = _as_numpy(value)
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.astype(np.float32)).to(torch.bfloat16)
    if array.dtype == object or array.dtype.name not in _NUMPY_NAMES:
        raise _Excluded(f"dtype {array.dtype.name}")
    return torch.from_numpy(np.array(array))


_NUMPY_NAMES = {
    "float16",
    "float32",
    "float64",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
}


def _check(got: torch.Tensor, expected, rtol: float, atol: float) -> None:
    want = _as_numpy(expected)
    if got.dtype == torch.bfloat16:
        assert want.dtype.name == "bfloat16", f"dtype bfloat16 vs {want.dtype}"
        np.testing.assert_allclose(
            got.float().numpy(), want.astype(np.float32), rtol=rtol, atol=atol
        )
        return
    actual = got.detach().numpy()
    assert actual.dtype == want.dtype, f"dtype {actual.dtype} vs {want.dtype}"
    np.testing.assert_allclose(actual, want, rtol=rtol, atol=atol)


def run_case(case) -> tuple[str, str]:
    """Run one ONNX backend test case. Returns (status, detail), status pass/fail/excluded."""
    if case.name in EXCLUDED:
        return "excluded", EXCLUDED[case.name]
    reason = _exotic_reason(case.model)
    if reason:
        return "excluded", reason
    try:
        module = OnnxModule(case.model).eval()
        for inputs, outputs in case.data_sets:
            args = [_to_torch(value) for value in inputs]
            with torch.no_grad():
                result = module(*args)
            result = result if isinstance(result, tuple) else (result,)
            for got, expected in zip(result, outputs, strict=False):
                _check(got, expected, case.rtol, case.atol)
    except _Excluded as excluded:
        return "excluded", str(excluded)
    except Exception as error:  # noqa: BLE001  (a failing case is data, not a crash)
        return "fail", f"{type(error).__name__}: {str(error)[:200]}".replace("\n", " ")
    return "pass", ""


def collect_results() -> dict[str, list[tuple[str, str, str]]]:
    """Op row -> [(case name, status, detail)] for every case whose ops are all registered."""
    from onnx.backend.test.case.node import collect_testcases

    registered = set(supported_ops())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    results: dict[str, list[tuple[str, str, str]]] = collections.defaultdict(list)
    for case in cases:
        if case.kind != "node":
            continue
        ops = {node.op_type for node in case.model.graph.node if node.domain in ("", "ai.onnx")}
        if (
            not ops
            or not ops <= registered
            or any(n.domain not in ("", "ai.onnx") for n in case.model.graph.node)
        ):
            continue
        row = case.model.graph.node[0].op_type if len(case.model.graph.node) == 1 else EXPANDED
        status, detail = run_case(case)
        results[row].append((case.name, status, detail))
    return dict(results)


def format_table(results: dict[str, list[tuple[str, str, str]]]) -> list[str]:
    """The per-op pass-rate table as text lines."""
    lines = [f"{'op':<26}{'pass':>6}{'run':>6}{'excl':>6}{'rate':>8}"]
    for row in sorted(results):
        entries = results[row]
        passed = sum(1 for _, s, _ in entries if s == "pass")
        ran = sum(1 for _, s, _ in entries if s != "excluded")
        excluded = len(entries) - ran
        rate = f"{passed / ran:7.1%}" if ran else "    n/a"
        lines.append(f"{row:<26}{passed:>6}{ran:>6}{excluded:>6}{rate:>8}")
        lines += [
            f"    FAIL {name}: {detail}" for name, status, detail in entries if status == "fail"
        ]
    return lines


class _TablePrinter:
    """A pytest plugin that prints the table in the terminal summary."""

    def __init__(self, lines: list[str]):
        self.lines = lines

    def pytest_terminal_summary(self, terminalreporter) -> None:
        terminalreporter.section("ONNX backend node conformance (OnnxModule)")
        for line in self.lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="module")
def results(request):
    found = collect_results()
    lines = format_table(found)
    untested = sorted(op for op in supported_ops() if op not in found and "::" not in op)
    lines.append(f"registered ops with no single-node ONNX case: {', '.join(untested) or 'none'}")
    manager = request.config.pluginmanager
    if not manager.has_plugin("n2nonnx-conformance-table"):
        manager.register(_TablePrinter(lines), "n2nonnx-conformance-table")
    return found


def test_each_registered_op_passes_95_percent(results):
    low = []
    for row, entries in results.items():
        ran = [s for _, s, _ in entries if s != "excluded"]
        if ran and ran.count("pass") / len(ran) < REQUIRED_PASS_RATE:
            low.append(f"{row}: {ran.count('pass')}/{len(ran)}")
    assert not low, "ops below 95%:\n" + "\n".join(low) + "\n" + "\n".join(format_table(results))


def test_conformance_covers_the_core_ops(results):
    core = {
        "Conv",
        "ConvTranspose",
        "Gemm",
        "MatMul",
        "BatchNormalization",
        "MaxPool",
        "AveragePool",
        "Relu",
        "Softmax",
        "LayerNormalization",
        "Reshape",
        "Concat",
        "Gather",
        "Resize",
        "Slice",
    }
    missing = sorted(core - {row for row, entries in results.items() if entries})
    assert not missing, f"no conformance cases ran for {missing}"


def test_excluded_cases_exist():
    """Every name in EXCLUDED is a real ONNX test case (the list does not rot silently)."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        names = {case.name for case in collect_testcases()}
    assert set(EXCLUDED) <= names, sorted(set(EXCLUDED) - names)
