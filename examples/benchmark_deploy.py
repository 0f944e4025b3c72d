"""Deployment in onnxruntime and MNN: dense vs masked vs deployed fp32 / fp16 / int8 / int4, MNN fp32.

For an MLP (784-1024-1024-10) and a VGG-style CNN (64-64-128-128-256-256 channels, 3x32x32
inputs; ``--models resnet`` adds a ResNet-style CNN), exported from PyTorch and pruned at
random (global) to each density, these files are compared in one run: the dense export,
the masked model as pruning writes it, ``n2nonnx.deploy`` with compact fp32 storage, with
fp16 values, with static int8 (uint8 activations, calibrated on random inputs, no
fallback) and with 4-bit MatMul / Gemm weights (MatMulNBits; convolutions stay fp32), all in
onnxruntime, and the deployed fp32 model converted to MNN (``--target mnn``, run with
MNN's module API; "n/a" without ``pip install 'n2nonnx[edge]'``). Latency: every variant
is timed in each interleaved round; a ratio is the median over rounds of the per-round
ratio to the dense model (below 1 = faster / smaller). Each table is printed with the
machine's load average (os.getloadavg) at its start and end: other processes on the
machine shift the absolute times, less so the per-round ratios.

    python examples/benchmark_deploy.py            # full size, 1 thread (minutes)
    python examples/benchmark_deploy.py --quick    # seconds (the test suite runs this)
"""

from __future__ import annotations

import argparse
import importlib.util
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
from n2nonnx.deployment.timing import interleaved_times  # noqa: E402
from n2nonnx.runtime import make_session  # noqa: E402

VGG = {"size": 32, "widths": (64, 64, 128, 128, 256, 256), "pool_after": (1, 3, 5)}
# name -> (zoo factory, options, sample shape): full and quick sizes
MODELS = {
    "mlp": ("mlp", {"in_features": 784, "hidden": (1024, 1024)}, (784,)),
    "vgg": ("vgg2d", {**VGG, "hidden": 256}, (3, 32, 32)),
    "resnet": ("resnet", {"widths": (32, 64, 128)}, (3, 32, 32)),
}
QUICK = {
    "mlp": ("mlp", {"in_features": 64, "hidden": (128, 128)}, (64,)),
    "vgg": ("vgg2d", {"size": 8, "widths": (8, 8, 16, 16), "hidden": 32}, (3, 8, 8)),
}
VARIANTS = ("dense", "masked", "fp32", "fp16", "int8", "int4", "mnn")
HAS_MNN = importlib.util.find_spec("MNN") is not None


class MNNSession:
    """An MNN module behind onnxruntime's ``run(None, feed)`` (inputs in, numpy out)."""

    def __init__(self, data: bytes, proto, folder: Path, threads: int) -> None:
        from n2nonnx.deployment.targets import mnn

        path = folder / f"model-{id(self)}.mnn"
        path.write_bytes(data)
        initializers = {t.name for t in proto.graph.initializer}
        self.inputs = [v.name for v in proto.graph.input if v.name not in initializers]
        outputs = [v.name for v in proto.graph.output]
        self.module = mnn.load(path, self.inputs, outputs, threads=threads)
        self._run = mnn.run

    def run(self, _names, feed):
        """One forward pass, like ``InferenceSession.run(None, feed)``."""
        return self._run(self.module, self.inputs, feed)


def build_variants(name, spec, density, folder: Path, seed: int = 0) -> dict[str, bytes | None]:
    """The serialized models of one (model, density) cell (None: not available here)."""
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
    fp32 = deploy(masked)
    int8 = deploy(masked, quantize="int8", data=data, fallback=False)
    return {
        "dense": dense.proto.SerializeToString(),
        "masked": masked.proto.SerializeToString(),
        "fp32": fp32.model.proto.SerializeToString(),
        "fp16": deploy(masked, weights_fp16=True).model.proto.SerializeToString(),
        "int8": int8.model.proto.SerializeToString(),
        "int4": deploy(masked, quantize="int4").model.proto.SerializeToString(),
        "mnn": deploy(masked, target="mnn").package.files[""] if HAS_MNN else None,
    }


def load_text() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny models, one density, batch 1, 1 thread"
    )
    parser.add_argument(
        "--rounds", type=int, default=7, help="interleaved timing rounds (default 7)"
    )
    parser.add_argument(
        "--models", nargs="+", choices=sorted(MODELS), default=["mlp", "vgg"], help="models"
    )
    parser.add_argument(
        "--densities", nargs="+", type=float, default=[0.05], help="densities (default 0.05)"
    )
    parser.add_argument(
        "--batches", nargs="+", type=int, default=[1, 64], help="batch sizes (default 1 64)"
    )
    parser.add_argument("--threads", type=int, default=1, help="threads (default 1)")
    parser.add_argument(
        "--out", type=Path, help="folder for the exported files (default: a temporary one)"
    )
    args = parser.parse_args(argv)
    models = QUICK if args.quick else {name: MODELS[name] for name in args.models}
    densities = (0.05,) if args.quick else tuple(args.densities)
    batches = (1,) if args.quick else tuple(args.batches)
    rounds = 3 if args.quick else args.rounds
    threads = 1 if args.quick else args.threads
    folder = args.out or Path(tempfile.mkdtemp(prefix="n2nonnx-bench-deploy-"))
    folder.mkdir(parents=True, exist_ok=True)
    size_rows, time_rows = [], []
    load_before = load_text()
    for name, spec in models.items():
        for density in densities:
            files = build_variants(name, spec, density, folder)
            dense_bytes = len(files["dense"])
            size_rows.append(
                (name, density, dense_bytes)
                + tuple(
                    None if files[v] is None else len(files[v]) / dense_bytes for v in VARIANTS[1:]
                )
            )
            available = [v for v in VARIANTS if files[v] is not None]
            sessions = [
                MNNSession(files[v], n2nonnx.load(files["fp32"]).proto, folder, threads)
                if v == "mnn"
                else make_session(files[v], ["CPUExecutionProvider"], threads=threads)
                for v in available
            ]
            for batch in batches:
                x = np.random.default_rng(1).standard_normal((batch, *spec[2])).astype(np.float32)
                feed = {sessions[0].get_inputs()[0].name: x}
                calls = 20 if batch == 1 else 3
                times = np.array(interleaved_times(sessions, feed, rounds=rounds, calls=calls))
                ratios = dict(zip(available, np.median(times / times[0], axis=1), strict=True))
                time_rows.append(
                    (name, density, threads, batch, float(np.median(times[0])))
                    + tuple(ratios.get(v) for v in VARIANTS[1:])
                )
            print(f"  done {name} at {density:.0%}", file=sys.stderr, flush=True)
    load_after = load_text()

    def cell(value, digits):
        return "n/a" if value is None else f"{value:.{digits}f}x"

    print(f"File size (ratio to the dense file); load average {load_before} -> {load_after}\n")
    print("| model | density | dense KiB | " + " | ".join(VARIANTS[1:]) + " |")
    print("|---|---|---|" + "---|" * (len(VARIANTS) - 1))
    for name, density, dense_bytes, *ratios in size_rows:
        print(
            f"| {name} | {density:.0%} | {dense_bytes / 1024:.0f} | "
            + " | ".join(cell(r, 3) for r in ratios)
            + " |"
        )
    print(
        f"\nLatency (median per call of dense; per-round ratio medians, below 1 = faster; "
        f"load average {load_before} -> {load_after})\n"
    )
    print("| model | density | threads | batch | dense ms | " + " | ".join(VARIANTS[1:]) + " |")
    print("|---|---|---|---|---|" + "---|" * (len(VARIANTS) - 1))
    for name, density, threads_used, batch, dense_time, *ratios in time_rows:
        print(
            f"| {name} | {density:.0%} | {threads_used} | {batch} | {dense_time * 1e3:.3f} | "
            + " | ".join(cell(r, 2) for r in ratios)
            + " |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
