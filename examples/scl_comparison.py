"""SCL and N2NSkip-SCL against SNIP and RP at equal density and epochs (MNIST-1D, deep MLP).

The study's MLP (40-256x8-10, seed-0 export) and recipe (Adam 1e-3, cosine, batch 128,
15 epochs). SNIP (global threshold) and RP (expander-style random pruning, ERK allocation)
prune at initialization with fan-in-corrected init and then train 15 epochs; SCL learns
its masks in the first half of the 15 epochs (target-density mode) and fine-tunes in the
second half; N2NSkip-SCL does the same with the N2NSkip-RP variant's skip layers (half of
the budget, block sampling) filled in as candidates, so SCL sets the skip split. Test
accuracy is measured in onnxruntime. Finished cells are kept in OUT/cells, so an
interrupted run resumes.

    OMP_NUM_THREADS=1 python examples/scl_comparison.py --out runs/scl        # about 20 minutes
    python examples/scl_comparison.py --quick --out /tmp/scl                   # under a minute
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import n2nonnx
from converters.pytorch import export
from n2nonnx import zoo
from n2nonnx.data import resolve_data
from n2nonnx.pruning import prune
from n2nonnx.runtime import accuracy
from n2nonnx.scl.variants import scl_cell
from n2nonnx.training import train

RECIPE = {
    "batch_size": 128,
    "optimizer": "adam",
    "lr": 1e-3,
    "weight_decay": 0.0,
    "schedule": "cosine",
}
# label -> (method, allocation of a pruning method | skip share of an SCL variant)
METHODS = {
    "SCL": ("scl", 0.0),
    "N2NSkip-SCL": ("scl", 0.5),
    "SNIP": ("snip", "global"),
    "RP": ("expander", "erk"),
}


def dense_model(hidden: list[int]) -> n2nonnx.Model:
    torch.manual_seed(0)
    module = zoo.build("mlp", in_features=40, hidden=hidden, classes=10)
    return n2nonnx.load(export(module, torch.randn(2, 40)).proto)


def run_cell(
    dense: n2nonnx.Model, dataset, label: str, density: float, seed: int, epochs: int
) -> dict:
    method, setting = METHODS[label]
    started = time.perf_counter()
    extra: dict = {}
    if method == "scl":
        result = scl_cell(
            dense,
            dataset,
            density=density,
            skip_share=setting,
            recipe={**RECIPE, "epochs": epochs},
            seed=seed,
        )
        trained = result.model
        extra = {
            "learned_density": result.learned_density,
            "reached": result.reached,
            **result.skip_split,
            "layer_densities": [round(layer.density, 4) for layer in result.layers],
        }
    else:
        pruned = prune(
            dense, method, density, allocation=setting, data=dataset, seed=seed, rescale=True
        )
        trained = train(pruned, dataset, epochs=epochs, seed=seed, **RECIPE).model
    kept = sum(int(np.count_nonzero(trained.effective_weight(layer))) for layer in trained.layers)
    total = sum(layer.parameters for layer in trained.layers if not layer.is_skip)
    return {
        "method": label,
        "density": density,
        "seed": seed,
        "epochs": epochs,
        "accuracy": accuracy(trained, dataset.x_test.numpy(), dataset.y_test.numpy()),
        "achieved_density": kept / total,
        "seconds": time.perf_counter() - started,
        **extra,
    }


def table(cells: list[dict], densities: list[float]) -> str:
    lines = [
        "| method | " + " | ".join(f"{d:.0%}" for d in densities) + " |",
        "|---|" + "---|" * len(densities),
    ]
    for label in METHODS:
        entries = []
        for density in densities:
            values = [
                100 * c["accuracy"]
                for c in cells
                if c["method"] == label and c["density"] == density
            ]
            if not values:
                entries.append("")
                continue
            spread = f" +- {np.std(values, ddof=1):.2f}" if len(values) > 1 else ""
            entries.append(f"{np.mean(values):.2f}{spread} (n={len(values)})")
        lines.append(f"| {label} | " + " | ".join(entries) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/scl_comparison")
    parser.add_argument(
        "--quick", action="store_true", help="a small MLP, one density, seed and 2 epochs"
    )
    parser.add_argument("--densities", type=float, nargs="+", default=[0.05, 0.02])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    hidden = [256] * 8
    if args.quick:
        hidden, args.densities, args.seeds, args.epochs = [32, 32], [0.2], [0], 2
    out = Path(args.out)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    dense = dense_model(hidden)
    dataset = resolve_data("mnist1d", input_shape=dense.graph_inputs[0].shape)
    settings = {"hidden": hidden, "epochs": args.epochs, "recipe": RECIPE}
    cells = []
    for density in args.densities:
        for seed in args.seeds:
            for label in METHODS:
                path = out / "cells" / f"{label}-d{density:g}-s{seed}.json"
                if path.exists() and json.loads(path.read_text()).get("settings") == settings:
                    cells.append(json.loads(path.read_text()))
                    continue
                cell = {
                    **run_cell(dense, dataset, label, density, seed, args.epochs),
                    "settings": settings,
                }
                temporary = path.with_suffix(".tmp")
                temporary.write_text(json.dumps(cell, indent=1))
                temporary.replace(path)
                cells.append(cell)
                print(
                    f"{label:5s} density {density:<5g} seed {seed}: {cell['accuracy']:.2%} "
                    f"(achieved density {cell['achieved_density']:.4g}, {cell['seconds']:.0f}s)",
                    flush=True,
                )
    text = table(cells, args.densities)
    (out / "results.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
