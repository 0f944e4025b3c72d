"""Deployment in onnxruntime: dense vs masked vs deployed fp32 / fp16 storage / int8.

For an MLP (784-1024-1024-10), a VGG-style CNN and a ResNet-style CNN (3x32x32 inputs),
exported from PyTorch and pruned at random (global) to each density, five files are
compared in one run: the dense export, the masked model as pruning writes it, and
``n2nonnx.deploy`` with compact fp32 storage, with fp16 values, and with static int8
(calibrated on random inputs; per-layer fp32 fallback). Latency: median seconds per call
over interleaved rounds, every variant timed in the same round, at each batch size and
thread count; ratios are against the dense model (below 1 = faster / smaller).

    python examples/benchmark_deploy.py            # full size (several minutes)
    python examples/benchmark_deploy.py --quick    # seconds (the test suite runs this)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import n2nonnx  # noqa: E402
from converters.pytorch import export  # noqa: E402
from n2nonnx import zoo  # noqa: E402
from n2nonnx.deployment import deploy  # noqa: E402
from n2nonnx.deployment.timing import interleaved_medians  # noqa: E402
from n2nonnx.runtime import make_session  # noqa: E402

# name -> (zoo factory, options, sample shape): full and quick sizes
MODELS = {
    "mlp": ("mlp", {"in_features": 784, "hidden": (1024, 1024)}, (784,)),
    "vgg": ("vgg2d", {"size": 32, "widths": (64, 64, 128, 128), "hidden": 256}, (3, 32, 32)),
    "resnet": ("resnet", {"widths": (32, 64, 128)}, (3, 32, 32)),
}
QUICK = {
    "mlp": ("mlp", {"in_features": 64, "hidden": (128, 128)}, (64,)),
    "vgg": ("vgg2d", {"size": 8, "widths": (8, 8, 16, 16), "hidden": 32}, (3, 8, 8)),
    "resnet": ("resnet", {"widths": (8, 16)}, (3, 8, 8)),
}
VARIANTS = ("dense", "masked", "fp32", "fp16", "int8")


def build_variants(name, spec, density, folder: Path, seed: int = 0) -> dict[str, bytes]:
    """The five serialized models of one (model, density) cell."""
    factory, options, shape = spec
    torch.manual_seed(seed)
    path = folder / f"{name}.onnx"
    export(zoo.build(factory, **options), torch.randn(2, *shape), path)
    dense = n2nonnx.load(path)
    masked = n2nonnx.prune(dense, "random", density, allocation="global", seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((256, *shape)).astype(np.float32)
    y = rng.integers(0, 10, 256)
    data = (x[:192], y[:192], x[192:], y[192:])
    return {
        "dense": dense.proto.SerializeToString(),
        "masked": masked.proto.SerializeToString(),
        "fp32": deploy(masked).model.proto.SerializeToString(),
        "fp16": deploy(masked, weights_fp16=True).model.proto.SerializeToString(),
        "int8": deploy(masked, quantize="int8", data=data).model.proto.SerializeToString(),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny models, one density, batch 1, 1 thread"
    )
    parser.add_argument(
        "--rounds", type=int, default=7, help="interleaved timing rounds (default 7)"
    )
    parser.add_argument(
        "--out", type=Path, help="folder for the exported files (default: a temporary one)"
    )
    args = parser.parse_args(argv)
    models = QUICK if args.quick else MODELS
    densities = (0.05,) if args.quick else (0.05, 0.02)
    batches = (1,) if args.quick else (1, 64)
    threads_list = (1,) if args.quick else (1, 2)
    rounds = 3 if args.quick else args.rounds
    import tempfile

    folder = args.out or Path(tempfile.mkdtemp(prefix="n2nonnx-bench-deploy-"))
    folder.mkdir(parents=True, exist_ok=True)
    size_rows, time_rows = [], []
    for name, spec in models.items():
        for density in densities:
            files = build_variants(name, spec, density, folder)
            dense_bytes = len(files["dense"])
            size_rows.append(
                (name, density, dense_bytes, *(len(files[v]) / dense_bytes for v in VARIANTS[1:]))
            )
            for threads in threads_list:
                sessions = [
                    make_session(files[v], ["CPUExecutionProvider"], threads=threads)
                    for v in VARIANTS
                ]
                for batch in batches:
                    x = (
                        np.random.default_rng(1)
                        .standard_normal((batch, *spec[2]))
                        .astype(np.float32)
                    )
                    feed = {sessions[0].get_inputs()[0].name: x}
                    calls = 20 if batch == 1 else 5
                    medians = interleaved_medians(sessions, feed, rounds=rounds, calls=calls)
                    time_rows.append(
                        (
                            name,
                            density,
                            threads,
                            batch,
                            medians[0],
                            *(m / medians[0] for m in medians[1:]),
                        )
                    )
            print(f"  done {name} at {density:.0%}", file=sys.stderr, flush=True)
    print("File size (ratio to the dense file)\n")
    print("| model | density | dense KiB | masked | fp32 | fp16 | int8 |")
    print("|---|---|---|---|---|---|---|")
    for name, density, dense_bytes, *ratios in size_rows:
        print(
            f"| {name} | {density:.0%} | {dense_bytes / 1024:.0f} | "
            + " | ".join(f"{r:.3f}x" for r in ratios)
            + " |"
        )
    print("\nLatency (median per call; ratio to dense, below 1 = faster)\n")
    print("| model | density | threads | batch | dense ms | masked | fp32 | fp16 | int8 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, density, threads, batch, dense_time, *ratios in time_rows:
        print(
            f"| {name} | {density:.0%} | {threads} | {batch} | {dense_time * 1e3:.3f} | "
            + " | ".join(f"{r:.2f}x" for r in ratios)
            + " |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
