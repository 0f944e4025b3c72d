"""Eval-mode accuracy of sparse VGG-1D with BatchNorm: running statistics vs recalibration.

Each cell prunes the study's VGG-1D (uniform allocation, random expander pruning, seed 0),
optionally adds N2NSkip (half the budget, uniform sampling, either join), trains it once
with the study's recipe (Adam 1e-3 cosine, 15 epochs) without recalibration, and then
scores the *same weights* on the MNIST-1D test split:

* ``ema``: eval mode with the running statistics of training (the old behaviour);
* ``batch``: train mode, batch statistics over the whole test split (the reference);
* ``exact``: statistics recalibrated exactly, layer by layer in eval mode;
* ``fixed``: ``exact`` plus stabilised input-independent channels (the trainer's default).

Eval-mode figures are given in PyTorch and in onnxruntime (on the written model).

    OMP_NUM_THREADS=1 python examples/bn_eval_check.py            # 6 cells, ~15 minutes on 1 core
    OMP_NUM_THREADS=1 python examples/bn_eval_check.py --quick    # one small cell, seconds
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from n2nonnx import add_n2nskip, io, prune, runtime, train, zoo
from n2nonnx.backend import OnnxModule
from n2nonnx.training.batchnorm import recalibrate_batchnorm

FULL_ARCH = {"widths": [32, 32, 64, 64, 128, 128], "pool_after": [1, 3]}
QUICK_ARCH = {"widths": [16, 16, 32, 32, 64, 64], "pool_after": [1, 3]}


def scores(module: OnnxModule, x: np.ndarray, y: np.ndarray, train_mode: bool = False) -> float:
    """Test accuracy of ``module`` in PyTorch (the whole split as one batch)."""
    module.train(train_mode)
    with torch.no_grad():
        return float((module(torch.as_tensor(x)).argmax(1).numpy() == y).mean())


def cell(base: Path, variant: str, density: float, join: str, epochs: int) -> dict[str, float]:
    """Train one cell and score its weights under each kind of statistics."""
    model = prune(io.load(base), "expander", density, allocation="uniform", seed=0, rescale=True)
    if variant == "N2NSkip-RP":
        model = add_n2nskip(
            model, density=density, skip_share=0.5, sampling="uniform", seed=0, join=join
        )
    result = train(model, "mnist1d", epochs=epochs, recalibrate_bn=False)
    proto = result.model.proto
    x_train = result.data.x_train.float()
    x, y = result.data.x_test.numpy().astype(np.float32), result.data.y_test.numpy()
    row = {
        "ema": scores(OnnxModule(proto), x, y),
        "ema_ort": runtime.accuracy(proto, x, y),
        "batch": scores(OnnxModule(proto), x, y, train_mode=True),  # a fresh module: no copies
    }
    for name, stabilise in (("exact", False), ("fixed", True)):
        module = OnnxModule(proto)
        calibration = recalibrate_batchnorm(module, x_train, stabilise=stabilise)
        row[name] = scores(module, x, y)
        row[name + "_ort"] = runtime.accuracy(module.write_back(proto), x, y)
        row["near_constant"] = calibration.near_constant
        row[name + "_stabilised"] = sum(layer.stabilised for layer in calibration.layers)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small cell, 2 epochs")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--densities", type=float, nargs="+", default=[0.05, 0.02])
    parser.add_argument(
        "--variants", nargs="+", default=["RP", "N2NSkip-RP/activation", "N2NSkip-RP/preact"]
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    arch, epochs = (QUICK_ARCH, 2) if args.quick else (FULL_ARCH, args.epochs)
    cells = (
        [("N2NSkip-RP/activation", 0.05)]
        if args.quick
        else [(variant, density) for density in args.densities for variant in args.variants]
    )
    print(f"VGG-1D {arch['widths']}, uniform allocation, seed 0, {epochs} epochs; test accuracy %")
    print(
        f"{'variant':24} {'density':>7} {'ema':>6} {'ema_ort':>7} {'batch':>6} {'exact':>6} {'exact_ort':>9} "
        f"{'fixed':>6} {'fixed_ort':>9} {'near-const':>10} {'stabilised':>10} {'s':>5}"
    )
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder) / "vgg1d.onnx"
        zoo.export_builtin("vgg1d", base, 0, arch)
        for variant, density in cells:
            started = time.perf_counter()
            name, _, join = variant.partition("/")
            row = cell(base, name, density, join or "activation", epochs)
            print(
                f"{variant:24} {density:7.3f} {100 * row['ema']:6.1f} {100 * row['ema_ort']:7.1f} "
                f"{100 * row['batch']:6.1f} {100 * row['exact']:6.1f} {100 * row['exact_ort']:9.1f} "
                f"{100 * row['fixed']:6.1f} {100 * row['fixed_ort']:9.1f} {row['near_constant']:10d} "
                f"{row['fixed_stabilised']:10d} {time.perf_counter() - started:5.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
