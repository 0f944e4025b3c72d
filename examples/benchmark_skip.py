"""onnxruntime latency of N2NSkip models against the same-density pruned model without skips.

For an MLP and a VGG-style CNN: export from PyTorch, prune at random to ``--density``
(the baseline), and add N2NSkip connections to the same pruned model (density kept:
half sequential, half skip), once with the default ``block`` sampling and once with the
paper's form (``sampling="uniform"``, ``merge="pair"``: uniformly random connections, one
skip layer per pair). Each model is timed in the same run, interleaved, at every batch
size; the table gives the latency (best of interleaved rounds) and the ratio to the baseline.

Columns: ``pruned`` (no skips), ``fast`` (the default: block sampling, one skip layer per
target, the target's kernel size), ``fast-1x1`` (the same with ``kernel="1x1"``), ``paper``
(uniform sampling, one skip layer per pair).

    python examples/benchmark_skip.py            # full size
    python examples/benchmark_skip.py --quick    # seconds (the test suite runs this)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import n2nonnx  # noqa: E402
from converters.pytorch import export  # noqa: E402
from n2nonnx import masks, zoo  # noqa: E402
from n2nonnx.runtime import make_session  # noqa: E402
from n2nonnx.skip import add_n2nskip  # noqa: E402

TARGET_RATIO = 1.15

# name -> (zoo factory, options, input shape without batch), full and quick sizes
MODELS = {
    "mlp": ("mlp", {"in_features": 784, "hidden": (1024, 1024, 1024), "classes": 10}, (784,)),
    "vgg": (
        "vgg2d",
        {
            "in_channels": 3,
            "size": 32,
            "widths": (64, 64, 128, 128, 256, 256),
            "pool_after": (1, 3, 5),
            "hidden": 256,
        },
        (3, 32, 32),
    ),
}
QUICK = {
    "mlp": ("mlp", {"in_features": 40, "hidden": (32, 32, 32), "classes": 10}, (40,)),
    "vgg": (
        "vgg2d",
        {"in_channels": 3, "size": 16, "widths": (8, 8, 16, 16), "hidden": 32},
        (3, 16, 16),
    ),
}


def random_pruned(model: n2nonnx.Model, density: float, seed: int) -> n2nonnx.Model:
    """Random pruning at ``density`` per layer (the same-density baseline)."""
    rng = np.random.default_rng(seed)
    new = {}
    for layer in model.layers:
        mask = np.zeros(layer.parameters, np.float32)
        mask[
            rng.choice(
                layer.parameters, size=max(1, round(density * layer.parameters)), replace=False
            )
        ] = 1
        new[layer.weight] = mask.reshape(layer.weight_shape)
    return masks.apply_masks(model, new)


def latency_ms(
    sessions: dict, feeds: dict, repeats: int, rounds: int, budget_s: float = 0.1
) -> dict[str, float]:
    """Latency per session (ms): the best of interleaved rounds of about ``budget_s`` each.

    The best round (as ``timeit`` reports) rather than the median: on a shared machine
    interference only ever adds time, and interleaving exposes every model to the same load.
    """
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for session in sessions.values():  # warm up, and fit the repeats to the slowest model
        start = time.perf_counter()
        for _ in range(2):
            session.run(None, feeds)
        once = (time.perf_counter() - start) / 2
        repeats = max(1, min(repeats, int(budget_s / max(once, 1e-6))))
    for _ in range(rounds):
        for name, session in sessions.items():
            start = time.perf_counter()
            for _ in range(repeats):
                session.run(None, feeds)
            times[name].append((time.perf_counter() - start) / repeats * 1e3)
    return {name: float(np.min(values)) for name, values in times.items()}


def build(name: str, spec, density: float, seed: int, folder: Path) -> dict[str, n2nonnx.Model]:
    """The baseline and the two N2NSkip variants of one architecture."""
    factory, options, shape = spec
    torch.manual_seed(seed)
    module = zoo.build(factory, **options)
    path = export(module, torch.randn(2, *shape), folder / f"{name}.onnx").path
    pruned = random_pruned(n2nonnx.load(path), density, seed)
    return {
        "pruned": pruned,
        "fast": add_n2nskip(pruned, skip_share=0.5, seed=seed),
        "fast-1x1": add_n2nskip(pruned, skip_share=0.5, kernel="1x1", seed=seed),
        "paper": add_n2nskip(pruned, skip_share=0.5, sampling="uniform", merge="pair", seed=seed),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny models, few repeats (seconds)")
    parser.add_argument(
        "--density", type=float, default=0.1, help="density of every model (default 0.1)"
    )
    parser.add_argument("--batch", type=int, action="append", help="batch sizes (default 1 and 64)")
    parser.add_argument(
        "--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    specs = QUICK if args.quick else MODELS
    batches = args.batch or [1, 64]
    repeats, rounds = (3, 3) if args.quick else (200, 21)
    print(
        f"N2NSkip latency, onnxruntime CPU, {args.threads} thread(s), density {args.density:g} "
        f"(skip_share 0.5), best-of-rounds ms; target ratio <= {TARGET_RATIO}"
    )
    header = (
        f"{'model':<6} {'batch':>5} {'pairs':>5} {'pruned':>9} {'fast':>9} {'ratio':>6} "
        f"{'fast-1x1':>9} {'ratio':>6} {'paper':>9} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as folder:
        for name, spec in specs.items():
            models = build(name, spec, args.density, args.seed, Path(folder))
            pairs = sum(layer.is_skip for layer in models["paper"].layers)
            sessions = {
                key: make_session(model, ["CPUExecutionProvider"], threads=args.threads)
                for key, model in models.items()
            }
            for batch in batches:
                x = np.random.default_rng(0).standard_normal((batch, *spec[2])).astype(np.float32)
                timing = latency_ms(sessions, {"x": x}, repeats, rounds)
                base = timing["pruned"]
                cells = " ".join(
                    f"{timing[key]:>9.4f} {timing[key] / base:>6.2f}"
                    for key in ("fast", "fast-1x1", "paper")
                )
                print(f"{name:<6} {batch:>5} {pairs:>5} {base:>9.4f} {cells}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
