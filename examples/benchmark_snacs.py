"""SNACS decision time against one training epoch, on the VGG-style 1-D CNN and MNIST-1D.

The SNACS decision is timed in its stages -- activations (250 samples per class through
the ONNX graph), ACMI scores (EDGE), constraints (the classifier sweep), and the whole
``prune_structured`` call (which also computes sensitivity and the cut with
``remove_units``) -- against one epoch of ``n2nonnx.train`` on the same data (4000
samples, batch 128, Adam). Rounds are interleaved; medians and the ratio decision / epoch
are printed. One thread throughout.

    python examples/benchmark_snacs.py            # full size (about 2 minutes)
    python examples/benchmark_snacs.py --quick    # seconds (the tests run this)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import n2nonnx  # noqa: E402
from converters.pytorch import export  # noqa: E402
from n2nonnx import zoo  # noqa: E402
from n2nonnx.data import resolve_data  # noqa: E402
from n2nonnx.structured import prune_structured  # noqa: E402
from n2nonnx.structured.activations import ActivationProbe, class_sample  # noqa: E402
from n2nonnx.structured.constraints import upper_limits  # noqa: E402
from n2nonnx.structured.estimators import make_estimator  # noqa: E402
from n2nonnx.structured.scores import unit_scores  # noqa: E402
from n2nonnx.structured.weights import network_range  # noqa: E402


def stages(model, dataset, per_class: int) -> dict[str, float]:
    """Seconds of the activations, scores and constraints stages (SNACS defaults)."""
    layers = {layer.name: layer for layer in model.layers}
    parents = model.layers[:-1]
    children = {p.name: [layers[e.target] for e in p.feeds if e.target in layers] for p in parents}
    times = {}
    started = time.perf_counter()
    sample = class_sample(dataset.x_train.numpy(), dataset.y_train.numpy(), per_class, 0)
    activations = ActivationProbe(model, model.layers, sample).run()
    times["activations"] = time.perf_counter() - started
    started = time.perf_counter()
    scores = unit_scores(
        model,
        parents,
        activations,
        make_estimator("edge", len(sample.y), 0),
        value_range=network_range(model),
    )
    times["scores"] = time.perf_counter() - started
    started = time.perf_counter()
    order = {name: np.argsort(values, kind="stable") for name, values in scores.items()}
    upper_limits(model, sample, parents, order, children)
    times["constraints"] = time.perf_counter() - started
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny CNN, 20 samples per class, one round"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    widths = (8, 8, 16, 16) if args.quick else (32, 32, 64, 64)
    per_class = 20 if args.quick else 250
    rounds = 1 if args.quick else args.rounds
    folder = Path(tempfile.mkdtemp(prefix="n2nonnx-bench-snacs-"))
    torch.manual_seed(0)
    export(zoo.build("vgg1d", widths=widths), torch.randn(2, 1, 40), folder / "vgg.onnx")
    dataset = resolve_data("mnist1d", input_shape=[None, 1, 40])
    model = n2nonnx.train(n2nonnx.load(folder / "vgg.onnx"), dataset, epochs=1).model
    records: dict[str, list[float]] = {}
    for _ in range(rounds):
        started = time.perf_counter()
        n2nonnx.train(model, dataset, epochs=1)
        records.setdefault("train epoch", []).append(time.perf_counter() - started)
        for name, seconds in stages(model, dataset, per_class).items():
            records.setdefault(name, []).append(seconds)
        result = prune_structured(
            model, "snacs", data=dataset, prune_percent=20, samples_per_class=per_class, align=0
        )
        records.setdefault("snacs decision (total)", []).append(result.decision_seconds)
    epoch = float(np.median(records["train epoch"]))
    print(
        f"VGG-style 1-D CNN {widths} on MNIST-1D, {per_class} samples per class, 1 thread, "
        f"median of {rounds} interleaved round(s)\n"
    )
    print("| step | seconds | x one epoch |")
    print("|---|---|---|")
    for name, values in records.items():
        seconds = float(np.median(values))
        print(f"| {name} | {seconds:.2f} | {seconds / epoch:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
