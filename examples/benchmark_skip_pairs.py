"""N2NSkip ``min_pair_weights``: accuracy and deployed latency for a few minimums side by side.

Every model is pruned at random to the sequential part of ``--density`` and given N2NSkip
connections (``skip_share`` 0.2, joined before the activation, as ``n2nonnx run``) once per
minimum; the skip budget is the same non-zero count each time, only the number of pairs
changes. Columns:

* ``pairs`` / ``dropped``: skip pairs kept and dropped below the minimum;
* ``acc %``: MNIST-1D test accuracy after a short training (MLP and VGG-1D, the study's
  models, mean over ``--seeds``);
* ``b1`` / ``b64``: onnxruntime latency (ms, median of interleaved rounds, 1 thread) of
  the deployed model (``deploy(..., timing=False)``) at batch 1 and 64, and ``x1`` /
  ``x64`` its ratio to the first minimum's (median of per-round ratios). The ResNet-18-style
  CNN (widths 16-32-64-128, 3x32x32, built in plain torch) is timed on random data, untrained.

    OMP_NUM_THREADS=1 python examples/benchmark_skip_pairs.py            # minutes on 1 core
    OMP_NUM_THREADS=1 python examples/benchmark_skip_pairs.py --quick    # seconds
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import n2nonnx  # noqa: E402
from converters.pytorch import export  # noqa: E402
from n2nonnx import zoo  # noqa: E402
from n2nonnx.deployment.timing import interleaved_times, ratio_medians  # noqa: E402
from n2nonnx.metadata import stages  # noqa: E402
from n2nonnx.runtime import accuracy, make_session  # noqa: E402
from n2nonnx.skip import sequential_density  # noqa: E402

SKIP = {"skip_share": 0.2, "join": "preact"}


def skip_models(
    dense: n2nonnx.Model, density: float, minimums: list[int], seed: int
) -> list[n2nonnx.Model]:
    """The pruned model given skips once per minimum (same pruned model, same budget)."""
    sequential = sequential_density(dense, density, SKIP["skip_share"])
    pruned = n2nonnx.prune(dense, "random", sequential, seed=seed)
    return [
        n2nonnx.add_n2nskip(pruned, density=density, min_pair_weights=m, seed=seed, **SKIP)
        for m in minimums
    ]


def counts(model: n2nonnx.Model) -> tuple[int, int, int]:
    """(pairs, dropped below the minimum, skip non-zeros) of an N2NSkip model."""
    record = stages(model.proto, "n2nskip")[-1]
    return len(record["pairs"]), record["below_minimum"], record["skip_nonzeros"]


def latencies(models: list[n2nonnx.Model], shape: tuple[int, ...], rounds: int) -> list[tuple]:
    """Per model: (b1 ms, b64 ms, b1 ratio, b64 ratio) of the deployed model, 1 thread."""
    sessions = [
        make_session(n2nonnx.deploy(m, timing=False).model.proto.SerializeToString(), threads=1)
        for m in models
    ]
    name = sessions[0].get_inputs()[0].name
    rng = np.random.default_rng(0)
    found = {}
    for batch in (1, 64):
        feed = {name: rng.standard_normal((batch, *shape)).astype(np.float32)}
        times = interleaved_times(sessions, feed, rounds=rounds, calls=10 if batch == 1 else 2)
        found[batch] = ([1e3 * float(np.median(t)) for t in times], ratio_medians(times))
    return [
        (found[1][0][i], found[64][0][i], found[1][1][i], found[64][1][i])
        for i in range(len(models))
    ]


def row(label: str, minimum: int, model: n2nonnx.Model, acc: str, timing: tuple) -> str:
    pairs, dropped, nonzeros = counts(model)
    b1, b64, x1, x64 = timing
    return (
        f"{label:10} {minimum:5d} {pairs:5d} {dropped:7d} {nonzeros:7d} {acc:>12} "
        f"{b1:8.3f} {x1:5.2f} {b64:8.2f} {x64:5.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small models, 1 epoch, 1 seed")
    parser.add_argument("--minimums", type=int, nargs="+", default=[1, 32, 128])
    parser.add_argument("--density", type=float, default=0.05)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    sizes: dict[str, dict] = {"mlp": {}, "vgg1d": {}}
    widths: tuple[int, ...] = (16, 32, 64, 128)
    image = 32
    if args.quick:
        sizes = {"mlp": {"hidden": [32, 32, 32]}, "vgg1d": {"widths": [8, 8, 16, 16]}}
        widths, image, args.epochs, args.seeds, args.rounds = (4, 8), 8, 1, [0], 2
        args.density = 0.2
    print(
        f"load {' '.join(f'{v:.2f}' for v in os.getloadavg())}, {os.cpu_count()} cores, "
        f"1 thread, density {args.density}, skip share {SKIP['skip_share']}, "
        f"{args.epochs} epochs, seeds {args.seeds}"
    )
    print(
        f"{'model':10} {'min':>5} {'pairs':>5} {'dropped':>7} {'skip nz':>7} {'acc %':>12} "
        f"{'b1 ms':>8} {'x1':>5} {'b64 ms':>8} {'x64':>5}"
    )
    with tempfile.TemporaryDirectory() as folder:
        for arch, options in sizes.items():
            path = zoo.export_builtin(arch, Path(folder) / f"{arch}.onnx", 0, options)
            dense = n2nonnx.load(path)
            shape = tuple(dense.graph_inputs[0].shape[1:])
            scores: list[list[float]] = [[] for _ in args.minimums]
            first = None
            for seed in args.seeds:
                models = skip_models(dense, args.density, args.minimums, seed)
                first = first or models
                for position, model in enumerate(models):
                    result = n2nonnx.train(model, "mnist1d", epochs=args.epochs, seed=seed)
                    x, y = result.data.x_test.numpy(), result.data.y_test.numpy()
                    scores[position].append(100 * accuracy(result.model, x, y))
            assert first is not None
            for position, timing in enumerate(latencies(first, shape, args.rounds)):
                values = scores[position]
                spread = f" +- {np.std(values, ddof=1):.1f}" if len(values) > 1 else ""
                acc = f"{np.mean(values):.1f}{spread}"
                print(row(arch, args.minimums[position], first[position], acc, timing), flush=True)
        torch.manual_seed(0)
        path = Path(folder) / "resnet18.onnx"
        export(
            zoo.build("resnet", widths=widths, blocks=2).eval(),
            torch.randn(1, 3, image, image),
            path,
        )
        models = skip_models(n2nonnx.load(path), args.density, args.minimums, 0)
        for position, timing in enumerate(latencies(models, (3, image, image), args.rounds)):
            print(row("resnet18", args.minimums[position], models[position], "-", timing))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
