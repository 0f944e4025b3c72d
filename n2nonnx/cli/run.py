"""``n2nonnx run``: the main job. Today: build the default model, export, load, show layers."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="the main job on a built-in default (or your model)",
        description="Without a model: build the built-in default (an MLP for MNIST-1D, defined "
        "in PyTorch), export it to ONNX through converters/, load it and print its layer table.",
    )
    parser.add_argument("model", nargs="?", help="an .onnx file (default: the built-in model)")
    parser.add_argument("--out", default="runs/default", help="output folder (default: runs/default)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the built-in model's weights")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from n2nonnx.io import load
    from n2nonnx.summary import describe, format_table

    if args.model is None:
        import torch

        from converters.pytorch import export
        from n2nonnx.zoo import build

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(args.seed)
        report = export(build("mlp"), torch.randn(1, 40), out / "model.onnx")
        print(f"exported the built-in MLP to {report.path} "
              f"(max |torch - onnxruntime| = {report.max_abs_diff:.2g})\n")
        path = report.path
    else:
        path = args.model
    print(format_table(describe(load(path))))
    return 0
