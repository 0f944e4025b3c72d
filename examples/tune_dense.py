"""Tune the study's training recipe on its dense models, without looking at the test set.

Each candidate recipe trains the dense study model on 80% of MNIST-1D's training split
and is scored on the other 20% (validation); the best recipe per architecture by
validation accuracy (and the best of at most 40 epochs, what the study affords per cell) is
then trained on the whole training split and tested, next to the study's current recipe. The printed table is what the README's "dense baseline"
paragraph reports.

    python examples/tune_dense.py --threads 1                # both architectures
    python examples/tune_dense.py --archs mlp --seeds 0 1    # a subset

Every (arch, recipe, seed) result is kept in ``--out`` (default ``runs/tune_dense``) as
soon as it finishes, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

import n2nonnx
from n2nonnx.data import holdout_split, resolve_data
from n2nonnx.study.grid import ARCHS, STUDY_RECIPE
from n2nonnx.zoo import export_builtin

# name -> changes to the study's recipe (Adam 1e-3, cosine, 15 epochs, batch 128, no decay)
CANDIDATES: dict[str, dict] = {
    "study": {},
    "epochs 40": {"epochs": 40},
    "lr 3e-3, 40 ep": {"lr": 3e-3, "epochs": 40},
    "lr 1e-2, 40 ep": {"lr": 1e-2, "epochs": 40},
    "batch 32, 40 ep": {"batch_size": 32, "epochs": 40},
    "adamw wd 0.05, 40 ep": {"optimizer": "adamw", "weight_decay": 0.05, "epochs": 40},
    "sgd 0.05 m0.9 wd 5e-4, 40 ep": {
        "optimizer": "sgd",
        "lr": 0.05,
        "weight_decay": 5e-4,
        "epochs": 40,
    },
    "lr 3e-3, batch 32, 40 ep": {"lr": 3e-3, "batch_size": 32, "epochs": 40},
    "lr 1e-3, batch 32, 80 ep": {"batch_size": 32, "epochs": 80},
    "lr 3e-3, batch 32, 80 ep": {"lr": 3e-3, "batch_size": 32, "epochs": 80},
}


def _train(model, data, recipe: dict, seed: int) -> float:
    result = n2nonnx.train(model, data, n2nonnx.TrainConfig(**recipe, seed=seed))
    return result.history.records[-1].test_accuracy


def _cached(path: Path, model, data, recipe: dict, seed: int) -> float:
    """The accuracy of one training run, from ``path`` if it ran before."""
    if path.exists():
        return json.loads(path.read_text())["accuracy"]
    value = _train(model, data, recipe, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"accuracy": value}))
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/tune_dense")
    parser.add_argument(
        "--quick", action="store_true", help="two candidates, 1 epoch, seed 0 (the tests' size)"
    )
    args = parser.parse_args()
    candidates = CANDIDATES
    if args.quick:
        candidates = {n: {**CANDIDATES[n], "epochs": 1} for n in ("study", "batch 32, 40 ep")}
        args.archs, args.seeds = ["mlp"], [0]
        args.out = tempfile.mkdtemp(prefix="tune_dense_")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for arch in args.archs:
            factory, options = ARCHS[arch]
            model = n2nonnx.load(
                export_builtin(factory, Path(scratch) / f"{arch}.onnx", 0, options)
            )
            info = model.graph_inputs[0]
            full = resolve_data("mnist1d", input_shape=info.shape, input_name=info.name)
            train = full.train
            split = holdout_split(train.x, train.y, test_fraction=0.2, seed=0, name="mnist1d train")
            scores = {}
            for name, change in candidates.items():
                recipe = {**STUDY_RECIPE, **change}
                accuracies = [
                    _cached(
                        out / arch / "validation" / f"{name}-s{seed}.json",
                        model,
                        split,
                        recipe,
                        seed,
                    )
                    for seed in args.seeds
                ]
                scores[name] = float(np.mean(accuracies))
                print(f"{arch:6s} {name:30s} validation {100 * scores[name]:.2f}", flush=True)
            best = max(scores, key=scores.get)
            # the best at no more than 40 epochs: what the study can afford per cell
            affordable = max(
                (n for n in scores if {**STUDY_RECIPE, **candidates[n]}["epochs"] <= 40),
                key=scores.get,
            )
            for name in dict.fromkeys(["study", best, affordable]):
                recipe = {**STUDY_RECIPE, **candidates[name]}
                tests = [
                    _cached(out / arch / "test" / f"{name}-s{seed}.json", model, full, recipe, seed)
                    for seed in args.seeds
                ]
                rows.append((arch, name, scores[name], float(np.mean(tests)), float(np.std(tests))))
    print("\n| arch | recipe | validation % | test % (mean +- std) |\n|---|---|---|---|")
    for arch, name, validation, test, std in rows:
        print(f"| {arch} | {name} | {100 * validation:.2f} | {100 * test:.2f} +- {100 * std:.2f} |")


if __name__ == "__main__":
    main()
