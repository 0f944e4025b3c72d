"""Where N2NSkip spends its budget, and what heat-diffusion connectivity says about it.

For each network, pruning method and density the script builds, from one dense model:

* ``RP``: random pruning at the density (no skips);
* ``RP-half``: random pruning at half the density (the sequential part of every N2NSkip
  row below, which adds the other half as skip weights);
* ``rand-uniform`` / ``rand-block`` / ``rand-channel``: N2NSkip with random placement
  (the paper's uniform sampling; n2nonnx's default block sampling; the authors' code's
  whole-kernel channel sampling);
* ``conn-uniform`` / ``conn-block``: N2NSkip with ``placement="connectivity"``;
* ``authors``: the authors' code variant (``pairs="blocks"``, channel sampling, the skip
  path's own BatchNorm, max-pool after its ReLU), random and connectivity-placed.

and prints, against the dense network: non-zero weights (identical within a density),
dead units (no path from the inputs or none to the outputs), connected components, the
degree of the heat sources (the input units) in the unit graph, delta at saturation (exact,
from the components) and delta(t) at four of the report's default times, the seconds
``add_n2nskip`` took, and what connectivity placement repaired.

Run ``python examples/skip_placement.py`` (VGG-1D of the study at 5% and 2%, random and
expander pruning; about a minute), ``--quick`` (5% only, random pruning) or add
``--vgg19`` for a CIFAR-shaped VGG19 (32x32 input) at 2% (about 2.5 minutes more).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import n2nonnx  # noqa: E402
from n2nonnx import metadata  # noqa: E402
from n2nonnx.connectivity import build_unit_graph, default_times  # noqa: E402
from n2nonnx.pruning import prune  # noqa: E402
from n2nonnx.skip import AUTHORS_VARIANT, add_n2nskip  # noqa: E402

VGG1D = {"widths": [32, 32, 64, 64, 128, 128], "pool_after": [1, 3]}
VGG19_WIDTHS = [64, 64, 128, 128, 256, 256, 256, 256] + [512] * 8
VGG19 = {"widths": VGG19_WIDTHS, "pool_after": [1, 3, 7, 11, 15], "size": 32, "hidden": 512}
ALLOCATION = {"random": "global", "expander": "erk"}
SKIP_ROWS = {
    "rand-uniform": {"sampling": "uniform"},
    "rand-block": {"sampling": "block"},
    "rand-channel": {"sampling": "channel"},
    "conn-uniform": {"sampling": "uniform", "placement": "connectivity"},
    "conn-block": {"sampling": "block", "placement": "connectivity"},
    "authors": dict(AUTHORS_VARIANT),
    "authors-conn": {**AUTHORS_VARIANT, "placement": "connectivity"},
}


def export(name: str, directory: Path) -> n2nonnx.Model:
    """The dense model (seed 0): the study's VGG-1D or a CIFAR-shaped VGG19."""
    import torch

    from n2nonnx.torch_export import to_onnx
    from n2nonnx.zoo import build, export_builtin

    if name == "vgg1d":
        return n2nonnx.load(export_builtin("vgg1d", directory / "vgg1d.onnx", 0, VGG1D))
    torch.manual_seed(0)
    module = build("vgg2d", **VGG19).eval()
    proto = to_onnx(module, (torch.randn(1, 3, 32, 32),), ["x"], ["y"])
    return n2nonnx.load(n2nonnx.save(proto, directory / "vgg19.onnx"))


def variants(dense: n2nonnx.Model, method: str, density: float, seed: int):
    """(name, model, seconds in add_n2nskip, repairs) of every row."""
    allocation = ALLOCATION[method]
    yield "RP", prune(dense, method, density, allocation=allocation, seed=seed), 0.0, None
    half = prune(dense, method, density / 2, allocation=allocation, seed=seed)
    yield "RP-half", half, 0.0, None
    for name, options in SKIP_ROWS.items():
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = add_n2nskip(half, density=density, seed=seed, **options)
        seconds = time.perf_counter() - started
        yield name, model, seconds, metadata.stages(model.proto, "n2nskip")[-1]["repairs"]


def nonzeros(model: n2nonnx.Model) -> int:
    """Non-zero weights, sequential and skip."""
    return sum(int(np.count_nonzero(model.effective_weight(layer))) for layer in model.layers)


def input_degree(model: n2nonnx.Model) -> int:
    """Edges at the heat sources (the input units) of the model's unit graph."""
    graph = build_unit_graph(model)
    return int(graph.adjacency[graph.input_nodes].sum())


def table(dense: n2nonnx.Model, label: str, method: str, density: float, seed: int) -> None:
    """Print one block of rows: every variant of ``dense`` at ``density``."""
    reference = build_unit_graph(dense)
    times = default_times(reference)[[0, 6, 13, 19]]
    rows = list(variants(dense, method, density, seed))
    report = n2nonnx.analyze(
        reference, *(model for _, model, _, _ in rows), names=[r[0] for r in rows], times=times
    )
    print(
        f"\n{label}, {method} pruning ({ALLOCATION[method]} allocation), density {density:g}, "
        f"seed {seed}; dense: {reference.n_nodes} units, heat-source degree "
        f"{input_degree(dense)}, mean degree {reference.adjacency.sum() / reference.n_nodes:.0f}"
    )
    header = (
        f"{'variant':<14}{'nonzeros':>10}{'dead':>6}{'comp':>6}{'in-deg':>8}{'delta(inf)':>12}"
        + "".join(f"{f'd({t:.2g})':>11}" for t in times)
        + f"{'secs':>7}  repairs (in/out/comp -> dead)"
    )
    print(header)
    print("-" * len(header))
    for (name, model, seconds, repairs), figures in zip(rows, report.models, strict=True):
        fixed = (
            f"{repairs['input_paths']}/{repairs['output_paths']}/{repairs['components']}"
            f" ({repairs['nonzeros']} w) {repairs['dead_before']}->{repairs['dead_after']}"
            if repairs
            else ""
        )
        print(
            f"{name:<14}{nonzeros(model):>10}{figures.total_dead:>6}{figures.components:>6}"
            f"{input_degree(model):>8}{figures.saturation_delta:>12.3g}"
            + "".join(f"{d:>11.3g}" for d in figures.delta)
            + f"{seconds:>7.2f}  {fixed}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="VGG-1D at 5%%, random pruning")
    parser.add_argument("--vgg19", action="store_true", help="add a CIFAR VGG19 at 2%% (slow)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print("N2NSkip placement vs connectivity (delta against the dense network; OMP threads 1)")
    with tempfile.TemporaryDirectory() as directory:
        vgg1d = export("vgg1d", Path(directory))
        cases = (
            [("random", 0.05)]
            if args.quick
            else [
                (method, density) for method in ("random", "expander") for density in (0.05, 0.02)
            ]
        )
        for method, density in cases:
            table(vgg1d, "VGG-1D 32-32-64-64-128-128", method, density, args.seed)
        if args.vgg19:
            table(
                export("vgg19", Path(directory)), "VGG19 (CIFAR, 32x32)", "random", 0.02, args.seed
            )


if __name__ == "__main__":
    main()
