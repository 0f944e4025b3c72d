"""Dead units and dead weights before and after connectivity repair, and what repair costs.

Each row builds one sparse model at initialization the way the main job or the study
does, once without repair and once with it (``prune(..., repair=True)``, and after
N2NSkip connections a second pass, ``repair_dead_weights``), and counts on the binary
unit graph the units and the kept weights that lie on no input-to-output path:

* ``main job``: ``n2nonnx run``'s defaults: the built-in MLP 40-256-256-256-10, SNIP, 5%,
  ERK, fan-in rescaling, skip share 0.2 joined before the activation;
* ``VGG-1D``: the study's VGG-1D (widths 32-32-64-64-128-128) at 2%, RP (expander, ERK)
  and N2NSkip-RP (skip share 0.5).

Pruning is timed without and with repair in interleaved rounds after one warm-up build
(medians, 1 thread); the second pass after the skips is timed on its own. ``moved`` and
``rounds`` add up both passes.

    OMP_NUM_THREADS=1 python examples/repair_check.py            # about a minute on 1 core
    OMP_NUM_THREADS=1 python examples/repair_check.py --quick    # smaller models, seconds
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from n2nonnx import add_n2nskip, io, prune, zoo
from n2nonnx.connectivity import build_unit_graph
from n2nonnx.connectivity.repair import dead_weights, repair_dead_weights
from n2nonnx.metadata import stages
from n2nonnx.model import Model
from n2nonnx.skip import sequential_density

FULL = {
    "mlp": {"hidden": [256, 256, 256]},
    "vgg1d": {"widths": [32, 32, 64, 64, 128, 128], "pool_after": [1, 3]},
}
QUICK = {"mlp": {"hidden": [64, 64]}, "vgg1d": {"widths": [8, 8, 16, 16], "pool_after": [1, 3]}}

# label, architecture, method, allocation, density, skip share, data, rescale, join
CASES = [
    ("main job (N2NSkip-CSP)", "mlp", "snip", "erk", 0.05, 0.2, "mnist1d", True, "preact"),
    ("VGG-1D RP", "vgg1d", "expander", "erk", 0.02, 0.0, None, True, "activation"),
    ("VGG-1D N2NSkip-RP", "vgg1d", "expander", "erk", 0.02, 0.5, None, True, "activation"),
]


def dead_counts(model: Model) -> tuple[int, int, int, int]:
    """(dead units, units, dead kept weights, kept weights) of a model's binary unit graph."""
    graph = build_unit_graph(model)
    units = sum(block.size for block in graph.blocks if not block.is_input)
    kept = sum(int(np.count_nonzero(model.effective_weight(layer))) for layer in model.layers)
    dead = sum(dead_weights(model).values())
    return sum(graph.dead_units().values()), units, dead, kept


def build(dense: Model, case: tuple, repair: bool) -> tuple[Model, float, float]:
    """The case's model: (model, pruning seconds, seconds of the second repair pass)."""
    _, _, method, allocation, density, share, data, rescale, join = case
    sequential = sequential_density(dense, density, share) if share else density
    started = time.perf_counter()
    model = prune(
        dense, method, sequential, allocation=allocation, data=data, rescale=rescale, repair=repair
    )
    pruning = time.perf_counter() - started
    second = 0.0
    if share:
        model = add_n2nskip(model, density=density, skip_share=share, join=join, seed=0)
        if repair:
            started = time.perf_counter()
            model = repair_dead_weights(model, seed=0)
            second = time.perf_counter() - started
    return model, pruning, second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller models, one timing round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sizes = QUICK if args.quick else FULL
    rounds = 1 if args.quick else args.rounds
    print(
        f"{'case':24} {'nnz':>7} {'dead units':>16} {'dead weights':>14} {'moved':>6} "
        f"{'rounds':>6} {'prune s':>8} {'+repair s':>9} {'ratio':>6} {'skip pass s':>11}"
    )
    with tempfile.TemporaryDirectory() as folder:
        for case in CASES:
            arch = case[1]
            dense = io.load(zoo.export_builtin(arch, Path(folder) / f"{arch}.onnx", 0, sizes[arch]))
            build(dense, case, repair=True)  # warm-up: imports, data, first-call costs
            plain_times, repaired_times, second_times = [], [], []
            for _ in range(rounds):
                plain, seconds, _ = build(dense, case, repair=False)
                plain_times.append(seconds)
                repaired, seconds, second = build(dense, case, repair=True)
                repaired_times.append(seconds)
                second_times.append(second)
            before, units, dead_before, kept = dead_counts(plain)
            after, _, dead_after, kept_after = dead_counts(repaired)
            assert kept == kept_after, (kept, kept_after)
            records = stages(repaired.proto, "repair")
            plain_s, repaired_s = statistics.median(plain_times), statistics.median(repaired_times)
            print(
                f"{case[0]:24} {kept:7d} {f'{before} -> {after} / {units}':>16} "
                f"{f'{dead_before} -> {dead_after}':>14} "
                f"{sum(r['moved'] for r in records):6d} {sum(r['rounds'] for r in records):6d} "
                f"{plain_s:8.3f} {repaired_s:9.3f} {repaired_s / plain_s:6.2f} "
                f"{statistics.median(second_times):11.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
