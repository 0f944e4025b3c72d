"""Aligned dead-unit removal in onnxruntime: dense vs deployed with --align 0 vs --align 16.

A VGG-style CNN (64-128-256 channels) and a ResNet-style CNN, 3x32x32 inputs, exported
from PyTorch and pruned at random (global) to 5% and 2% density, then deployed (fp32,
compact storage, no timing choice) with exact dead-unit removal (``align=0``) and with kept
widths rounded up to multiples of 16 (``align=16``). Latency: seconds per call over
interleaved rounds (every variant timed in each round), 1 thread, batch 1 and 64; the
ratios are medians of the per-round ratios to dense (below 1 = faster). The kept widths of
the layers that lose units stand beside each latency; the machine load (1-minute average)
is printed with each table.

    python examples/benchmark_align.py            # full size (a few minutes)
    python examples/benchmark_align.py --quick    # seconds (the test suite runs this)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import n2nonnx  # noqa: E402
from converters.pytorch import export  # noqa: E402
from n2nonnx import zoo  # noqa: E402
from n2nonnx.deployment import deploy  # noqa: E402
from n2nonnx.deployment.timing import interleaved_times, ratio_medians  # noqa: E402
from n2nonnx.runtime import make_session  # noqa: E402

# name -> (zoo factory, options, sample shape): full and quick sizes
MODELS = {
    "vgg": ("vgg2d", {"size": 32, "widths": (64, 64, 128, 128, 256), "hidden": 256}, (3, 32, 32)),
    "resnet": ("resnet", {"widths": (32, 64, 128)}, (3, 32, 32)),
}
QUICK = {
    "vgg": ("vgg2d", {"size": 8, "widths": (8, 8, 16, 16), "hidden": 32}, (3, 8, 8)),
    "resnet": ("resnet", {"widths": (8, 16)}, (3, 8, 8)),
}
VARIANTS = ("dense", "align0", "align16")


def build(name, spec, density, folder: Path, seed: int = 0):
    """The serialized variants of one (model, density) cell and their narrowed widths."""
    factory, options, shape = spec
    torch.manual_seed(seed)
    path = folder / f"{name}.onnx"
    export(zoo.build(factory, **options), torch.randn(2, *shape), path)
    dense = n2nonnx.load(path)
    masked = n2nonnx.prune(dense, "random", density, allocation="global", seed=seed)
    files, widths = {"dense": dense.proto.SerializeToString()}, {"dense": ""}
    for variant, align in (("align0", 0), ("align16", 16)):
        result = deploy(masked, align=align, timing=False, samples=32)
        files[variant] = result.model.proto.SerializeToString()
        chosen = result.summary["removal"]
        narrowed = chosen["widths"].get(chosen["chosen"], {})
        widths[variant] = " ".join(f"{full}->{kept}" for full, kept in narrowed.values())
    return files, widths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny models, 5%%, batch 1")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (default 9)")
    args = parser.parse_args(argv)
    models = QUICK if args.quick else MODELS
    densities = (0.05,) if args.quick else (0.05, 0.02)
    batches = (1,) if args.quick else (1, 64)
    rounds = 3 if args.quick else args.rounds
    rows = []
    with tempfile.TemporaryDirectory(prefix="n2nonnx-bench-align-") as scratch:
        for name, spec in models.items():
            for density in densities:
                files, widths = build(name, spec, density, Path(scratch))
                sessions = [
                    make_session(files[v], ["CPUExecutionProvider"], threads=1) for v in VARIANTS
                ]
                for batch in batches:
                    x = np.random.default_rng(1).standard_normal((batch, *spec[2]))
                    feed = {sessions[0].get_inputs()[0].name: x.astype(np.float32)}
                    calls = 20 if batch == 1 else 3
                    times = interleaved_times(
                        sessions, feed, rounds=rounds, calls=5 if args.quick else calls, warmup=1
                    )
                    ratios = ratio_medians(times)[1:]
                    rows.append((name, density, batch, float(np.median(times[0])), ratios, widths))
                print(f"  done {name} at {density:.0%}", file=sys.stderr, flush=True)
    load = os.getloadavg()[0]
    print(f"Latency, 1 thread (per-round ratio medians to dense; load {load:.2f})\n")
    print("| model | density | batch | dense ms | align 0 | kept widths | align 16 | kept widths |")
    print("|---|---|---|---|---|---|---|---|")
    for name, density, batch, dense, ratios, widths in rows:
        print(
            f"| {name} | {density:.0%} | {batch} | {dense * 1e3:.3f} | {ratios[0]:.2f}x | "
            f"{widths['align0'] or '-'} | {ratios[1]:.2f}x | {widths['align16'] or '-'} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
