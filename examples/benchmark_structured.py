"""Structured pruning in onnxruntime: exact widths vs widths aligned to 16, against dense.

A VGG-style and a ResNet-style CNN (3x32x32, the deployment issue's widths) are slimmed by
L1-filter pruning (Li et al. 2017) to 25 / 50 / 75% fewer parameters, once with exact unit
counts (``align=0``) and once aligned to multiples of 16 (``align=16``, the default; the
parameter target still met). Latency: every variant timed in the same interleaved rounds
at 1 thread, the ratio to dense taken per round, then the median (below 1 = faster).

    python examples/benchmark_structured.py            # full size (a few minutes)
    python examples/benchmark_structured.py --quick    # seconds (the test suite runs this)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import n2nonnx  # noqa: E402
from converters.pytorch import export  # noqa: E402
from n2nonnx import zoo  # noqa: E402
from n2nonnx.deployment.timing import interleaved_times, ratio_medians  # noqa: E402
from n2nonnx.runtime import make_session  # noqa: E402
from n2nonnx.structured import prune_structured  # noqa: E402

MODELS = {
    "vgg": ("vgg2d", {"widths": (64, 128, 256, 256), "hidden": 256}, (3, 32, 32)),
    "resnet": ("resnet", {"widths": (64, 128, 256)}, (3, 32, 32)),
}
QUICK = {
    "vgg": ("vgg2d", {"size": 8, "widths": (32, 32, 48, 48), "hidden": 32}, (3, 8, 8)),
    "resnet": ("resnet", {"widths": (32, 48)}, (3, 8, 8)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny models and few rounds")
    parser.add_argument("--percents", type=float, nargs="+", default=[25, 50, 75])
    parser.add_argument("--batches", type=int, nargs="+", default=None)
    args = parser.parse_args()
    models = QUICK if args.quick else MODELS
    batches = args.batches or ([1, 4] if args.quick else [1, 64])
    rounds, calls = (3, 2) if args.quick else (15, 10)
    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp(prefix="n2nonnx-structured-"))
    print(f"load average (1, 5, 15 min): {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(
        "| model | removed | align | params kept | widths | "
        + " | ".join(f"latency b{b}" for b in batches)
        + " |"
    )
    print("|---|---|---|---|---|" + "---|" * len(batches))
    for name, (factory, options, shape) in models.items():
        torch.manual_seed(0)
        path = folder / f"{name}.onnx"
        export(zoo.build(factory, **options).eval(), torch.randn(1, *shape), path)
        dense = n2nonnx.load(path)
        variants = [("dense", 0, dense)]
        for percent in args.percents:
            for align in (0, 16):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    result = prune_structured(dense, "l1", prune_percent=percent, align=align)
                variants.append((f"{percent:g}%", align, result.model))
        sessions = [
            make_session(model.proto, ["CPUExecutionProvider"], threads=1)
            for _, _, model in variants
        ]
        latencies = {}
        for batch in batches:
            x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
            feed = {dense.graph_inputs[0].name: x}
            times = interleaved_times(sessions, feed, rounds=rounds, calls=calls, warmup=1)
            latencies[batch] = ratio_medians(times)
        for position, (label, align, model) in enumerate(variants):
            widths = "-".join(str(layer.units) for layer in model.layers[:-1])
            kept = model.parameter_count / dense.parameter_count
            cells = " | ".join(f"{latencies[b][position]:.2f}x" for b in batches)
            print(
                f"| {name} | {label} | {align if position else '-'} | {kept:.3f} | {widths} | {cells} |"
            )
    print(f"load average (1, 5, 15 min): {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
