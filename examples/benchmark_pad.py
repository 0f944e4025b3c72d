"""Padding to alignment in onnxruntime: dense vs pruned to odd widths vs zero-padded back to 16s.

A VGG-style CNN (64-128-256-256 channels, 3x32x32 inputs) exported from PyTorch has
channels removed elsewhere-style (the filters of lowest L1 norm, with
:func:`n2nonnx.units.remove_units`) down to widths onnxruntime's blocked convolution
(NCHWc) does not take (53, 126, 250, 250); nothing is left to remove. The ``padded``
variant appends zero units (:func:`n2nonnx.deployment.padding.pad_to_align`, exact: its
outputs are checked against the unpadded model) so that every convolution reads a
multiple of 16 channels again (64, 128, 256). Latency: seconds per call over interleaved
rounds (every variant timed in each round), 1 thread, batch 1 and 64; ratios are medians
of the per-round ratios to dense (below 1 = faster). The machine load (1-minute average)
is printed with the table.

    python examples/benchmark_pad.py            # full size (about a minute)
    python examples/benchmark_pad.py --quick    # seconds (the test suite runs this)
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
from n2nonnx.deployment.padding import pad_to_align  # noqa: E402
from n2nonnx.deployment.timing import interleaved_times, ratio_medians  # noqa: E402
from n2nonnx.runtime import make_session  # noqa: E402
from n2nonnx.units import remove_units  # noqa: E402

# (zoo options, sample shape, kept widths of the convolutions): full and quick sizes
FULL = ({"size": 32, "widths": (64, 128, 256, 256)}, (3, 32, 32), (53, 126, 250, 250))
QUICK = ({"size": 8, "widths": (32, 64, 64, 64)}, (3, 8, 8), (27, 62, 58, 58))
VARIANTS = ("dense", "unpadded", "padded")


def build(spec, folder: Path, seed: int = 0):
    """The three variants (models) and the convolutions' input widths of each."""
    options, shape, kept = spec
    torch.manual_seed(seed)
    path = folder / "vgg.onnx"
    export(zoo.build("vgg2d", hidden=64, **options), torch.randn(2, *shape), path)
    dense = n2nonnx.load(path)
    convs = [layer for layer in dense.layers if layer.op == "Conv"]
    removal = {}
    for layer, width in zip(convs, kept, strict=True):
        weight = np.asarray(dense.effective_weight(layer)).reshape(layer.units, -1)
        removal[layer.name] = np.argsort(np.abs(weight).sum(axis=1))[: layer.units - width]
    unpadded = remove_units(dense, removal)
    plan = pad_to_align(unpadded, 16)
    models = {"dense": dense, "unpadded": unpadded, "padded": plan.model}
    widths = {
        v: "-".join(str(la.in_units) for la in m.layers if la.op == "Conv")
        for v, m in models.items()
    }
    return models, widths, plan


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny model, batch 1")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (default 9)")
    args = parser.parse_args(argv)
    spec = QUICK if args.quick else FULL
    batches = (1,) if args.quick else (1, 64)
    rounds = 3 if args.quick else args.rounds
    with tempfile.TemporaryDirectory(prefix="n2nonnx-bench-pad-") as scratch:
        models, widths, plan = build(spec, Path(scratch))
    sessions = [
        make_session(models[v].proto, ["CPUExecutionProvider"], threads=1) for v in VARIANTS
    ]
    name = sessions[0].get_inputs()[0].name
    check = {name: np.random.default_rng(2).standard_normal((8, *spec[1])).astype(np.float32)}
    unpadded, padded = (sessions[i].run(None, check)[0] for i in (1, 2))
    error = float(np.max(np.abs(padded - unpadded)) / max(np.max(np.abs(unpadded)), 1e-12))
    assert error < 1e-4, f"padding changed the outputs (relative {error:.2e})"
    rows = []
    for batch in batches:
        x = np.random.default_rng(1).standard_normal((batch, *spec[1])).astype(np.float32)
        calls = (5 if args.quick else 20) if batch == 1 else 3
        times = interleaved_times(sessions, {name: x}, rounds=rounds, calls=calls, warmup=1)
        rows.append((batch, float(np.median(times[0])), ratio_medians(times)[1:]))
    load = os.getloadavg()[0]
    print(f"Latency, 1 thread (per-round ratio medians to dense; load {load:.2f})\n")
    print(f"conv input channels: {', '.join(f'{v} {w}' for v, w in widths.items())}")
    print(
        f"padded: {plan.added} zero units in {len(plan.counts)} layers, "
        f"max relative output difference to unpadded {error:.1e}\n"
    )
    print("| batch | dense ms | unpadded | padded |")
    print("|---|---|---|---|")
    for batch, dense, ratios in rows:
        print(f"| {batch} | {dense * 1e3:.3f} | {ratios[0]:.2f}x | {ratios[1]:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
