"""The scikit-learn bridge: export MLPs and linear models with skl2onnx, checked in onnxruntime.

Command line::

    python -m converters.sklearn model.pkl --input-shape 1x20 -o mlp.onnx

Exports keep float outputs n2nonnx can train: ``zipmap=False`` (probabilities as a float
matrix, not a sequence of maps), and linear models' ``ai.onnx.ml`` LinearClassifier /
LinearRegressor (weights held as node attributes, which nothing can prune) become a Gemm
with the weights as initializers, followed by the same post transform.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from converters._common import (
    ExportReport,
    finish,
    missing,
    output_arguments,
    random_example,
    run_cli,
)
from n2nonnx.errors import InvalidArgumentError

_POST = {"LOGISTIC": "Sigmoid", "SOFTMAX": "Softmax", "NONE": "Identity"}


def export(
    estimator: Any,
    example: np.ndarray,
    path: str | Path | None = None,
    *,
    opset: int = 17,
    linear_as_gemm: bool = True,
) -> ExportReport:
    """Export a fitted estimator with skl2onnx and compare it with onnxruntime.

    Args:
        estimator: a fitted MLPClassifier / MLPRegressor / linear model (or a pipeline).
        example: example inputs (N x features); compared on ``predict_proba`` for
            classifiers, ``predict`` for regressors.
        path: where to write the ``.onnx`` file (None: keep it in memory).
        opset: default-domain opset.
        linear_as_gemm: rewrite LinearClassifier / LinearRegressor as Gemm (prunable).

    Returns:
        An :class:`~converters.pytorch.ExportReport` over the float outputs.
    """
    try:
        from skl2onnx import to_onnx
    except ImportError:
        raise missing("skl2onnx", "sklearn") from None
    example = np.asarray(example, dtype=np.float32)
    classifier = hasattr(estimator, "predict_proba")
    options = {id(estimator): {"zipmap": False}} if classifier else None
    proto = to_onnx(
        estimator, example[:1], options=options, target_opset={"": opset, "ai.onnx.ml": 3}
    )
    if linear_as_gemm:
        proto = linear_to_gemm(proto)
    feeds = {proto.graph.input[0].name: example}
    if classifier:
        expected = [estimator.predict(example), estimator.predict_proba(example)]
    else:
        expected = [np.asarray(estimator.predict(example)).reshape(len(example), -1)]
    return finish(proto, feeds, expected, path)


def linear_to_gemm(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Replace ``ai.onnx.ml`` LinearClassifier (integer labels) and LinearRegressor with Gemm.

    Args:
        proto: a skl2onnx export (not modified).

    Returns:
        A new model computing the same outputs with the weights as initializers.
    """
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        replaced = _rewrite(node, graph) if node.domain == "ai.onnx.ml" else None
        nodes.extend(replaced if replaced is not None else [node])
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return model


def _rewrite(node: onnx.NodeProto, graph: onnx.GraphProto) -> list[onnx.NodeProto] | None:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    post = attrs.get("post_transform", b"NONE").decode()
    if post not in _POST:
        return None
    base = node.name or node.output[0]
    if node.op_type == "LinearRegressor":
        targets = int(attrs.get("targets", 1))
        rows = targets
    elif node.op_type == "LinearClassifier" and "classlabels_ints" in attrs:
        labels = np.asarray(attrs["classlabels_ints"], dtype=np.int64)
        rows = len(attrs.get("intercepts", [])) or len(labels)
        if rows != len(labels):
            return None  # binary with one weight row: left to the ai.onnx.ml kernel
    else:
        return None
    weight = np.asarray(attrs["coefficients"], dtype=np.float32).reshape(rows, -1)
    bias = np.asarray(attrs.get("intercepts", [0.0] * rows), dtype=np.float32)
    graph.initializer.extend(
        [
            numpy_helper.from_array(weight, f"{base}/weight"),
            numpy_helper.from_array(bias, f"{base}/bias"),
        ]
    )
    scores = node.output[1] if node.op_type == "LinearClassifier" else node.output[0]
    raw = f"{base}/raw_scores"
    out = [
        helper.make_node(
            "Gemm",
            [node.input[0], f"{base}/weight", f"{base}/bias"],
            [raw],
            name=f"{base}/gemm",
            transB=1,
        )
    ]
    extra: dict[str, Any] = {"axis": -1} if post == "SOFTMAX" else {}
    out.append(helper.make_node(_POST[post], [raw], [scores], name=f"{base}/post", **extra))
    if node.op_type == "LinearClassifier" and node.output[0]:
        graph.initializer.append(numpy_helper.from_array(labels, f"{base}/labels"))
        out.append(
            helper.make_node(
                "ArgMax", [scores], [f"{base}/argmax"], name=f"{base}/argmax", axis=1, keepdims=0
            )
        )
        out.append(
            helper.make_node(
                "Gather",
                [f"{base}/labels", f"{base}/argmax"],
                [node.output[0]],
                name=f"{base}/label",
                axis=0,
            )
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m converters.sklearn model.pkl --input-shape 1x20 -o out.onnx``."""
    parser = argparse.ArgumentParser(
        prog="python -m converters.sklearn",
        description="Export a fitted scikit-learn model (pickle) to ONNX and check it in onnxruntime.",
    )
    parser.add_argument("estimator", help="a pickle of a fitted estimator (trusted files only)")
    parser.add_argument("--input-shape", required=True, help="example input shape, e.g. 8x20")
    output_arguments(parser)
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--seed", type=int, default=0, help="seed of the example inputs")
    args = parser.parse_args(argv)

    def export_model() -> ExportReport:
        try:
            with open(args.estimator, "rb") as handle:
                estimator = pickle.load(handle)  # noqa: S301 - the user's own file
        except OSError as error:
            raise InvalidArgumentError(f"cannot read {args.estimator}: {error.strerror}") from None
        return export(estimator, random_example(args), args.output, opset=args.opset)

    return run_cli("sklearn", export_model, args)


if __name__ == "__main__":
    sys.exit(main())
