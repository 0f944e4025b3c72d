"""Benchmark: heat-diffusion connectivity of VGG19 and ResNet-50 exports against their dense reference.

The networks are built in PyTorch at the paper's widths (VGG19: 16 convs 64..512 and a
4096-4096-1000 classifier, 14,699 units, 25 million edges in its dense unit graph;
ResNet-50: bottleneck stages 64..2048 and a 1000-way FC, 27,563 units, 48 million edges)
with CIFAR-sized 32x32 inputs and random weights, exported with ``n2nonnx.torch_export``,
pruned at random to 2% (``n2nonnx.prune``) and given N2NSkip connections at the same 2%
(``n2nonnx.add_n2nskip``). The measured call is what ``n2nonnx connectivity dense.onnx
rp.onnx n2nskip.onnx --no-spectrum`` runs: ``analyze(dense, rp, n2nskip, spectrum=False)``,
delta(t) at the default 20 times plus the exact saturation delta for the two models.

* n2nonnx: the default path, where the dense reference's graph is kept as complete
  bipartite blocks (``ImplicitFlow``; products O(units), heat by Lanczos);
* baseline: every graph explicit (``build_unit_graph(..., implicit=False)``, heat by
  ``expm_multiply`` on the 25-million-edge matrix), the earlier behaviour. At full width it
  needs about 15 GB and two minutes, so it runs at a smaller width (``--baseline-divisor``,
  default 4: widths / 4), where n2nonnx runs too for the side-by-side and the agreement.

Each measurement runs in a fresh process (its peak RSS is the method's, loading included),
one thread, rounds interleaved, medians. Run ``python examples/benchmark_connectivity.py``
(full size, a few minutes) or ``--quick`` (widths / 16, models kept in memory and measured
in-process: no load time, no per-method RSS; for the test suite).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

VGG19 = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", *(512,) * 4, "M", *(512,) * 4, "M")
RESNET50 = ((64, 256, 3), (128, 512, 4), (256, 1024, 6), (512, 2048, 3))  # mid, out, blocks


def vgg19(divisor: int = 1):
    """VGG19 (configuration E, BatchNorm) with a 4096-4096-1000 classifier, widths / divisor."""
    from torch import nn

    layers: list[nn.Module] = []
    channels = 3
    for item in VGG19:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
            continue
        width = int(item) // divisor
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
        channels = width
    hidden = 4096 // divisor
    return nn.Sequential(
        *layers,
        nn.Flatten(),
        nn.Linear(channels, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 1000 // divisor),
    )


def resnet50(divisor: int = 1):
    """ResNet-50 (bottleneck blocks, 3x3 CIFAR stem) with a 1000-way FC, widths / divisor."""
    import torch
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self, channels: int, mid: int, out: int, stride: int) -> None:
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(channels, mid, 1, bias=False), nn.BatchNorm2d(mid)
            self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(mid)
            self.conv3, self.bn3 = nn.Conv2d(mid, out, 1, bias=False), nn.BatchNorm2d(out)
            self.shortcut: nn.Module = nn.Identity()
            if stride != 1 or channels != out:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(channels, out, 1, stride, bias=False), nn.BatchNorm2d(out)
                )

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = self.bn3(self.conv3(torch.relu(self.bn2(self.conv2(y)))))
            return torch.relu(y + self.shortcut(x))

    width = 64 // divisor
    layers: list[nn.Module] = [
        nn.Conv2d(3, width, 3, 1, 1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
    ]
    channels = width
    for stage, (mid, out, blocks) in enumerate(RESNET50):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            layers.append(Bottleneck(channels, mid // divisor, out // divisor, stride))
            channels = out // divisor
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 1000 // divisor)]
    return nn.Sequential(*layers)


ARCHITECTURES = {"VGG19": vgg19, "ResNet-50": resnet50}


def build_models(architecture: str, divisor: int, folder: Path | None):
    """Export the dense network, prune it to 2% at random, add N2NSkip.

    Returns:
        The three models, saved into ``folder`` (their paths) unless it is None.
    """
    import torch

    import n2nonnx
    from n2nonnx.torch_export import to_onnx

    torch.manual_seed(0)
    module = ARCHITECTURES[architecture](divisor).eval()
    dense = n2nonnx.load(to_onnx(module, (torch.randn(1, 3, 32, 32),), ["x"], ["y"]))
    pruned = n2nonnx.prune(dense, "random", density=0.02, seed=0)
    models = [dense, pruned, n2nonnx.add_n2nskip(pruned, seed=0)]
    if folder is None:
        return models
    stem = f"{architecture.lower().replace('-', '')}_w{divisor}"
    return [
        Path(n2nonnx.save(model, folder / f"{stem}{suffix}.onnx"))
        for model, suffix in zip(models, ("", "_rp", "_n2nskip"), strict=True)
    ]


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB.

    ``VmHWM`` of /proc/self/status where there is one: unlike ``ru_maxrss``, which Linux
    carries over from the parent across fork and exec, it is this program's own peak.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(method: str, sources: list, spectrum: bool) -> dict:
    """Load the three models (paths) or take them (models) and analyze them.

    Returns:
        seconds (load, analyze), peak RSS of the process and the figures.
    """
    import n2nonnx
    from n2nonnx.connectivity import analyze, build_unit_graph

    begin = time.perf_counter()
    models = [n2nonnx.load(s) if isinstance(s, (str, Path)) else s for s in sources]
    loaded = time.perf_counter()
    if method == "baseline":
        models = [build_unit_graph(model, implicit=False) for model in models]
    report = analyze(models[0], *models[1:], spectrum=spectrum)
    end = time.perf_counter()
    return {
        "load": loaded - begin,
        "analyze": end - loaded,
        "rss_mb": peak_rss_mb(),
        "times": report.times.tolist(),
        "delta": [m.delta.tolist() for m in report.models],
        "saturation": [m.saturation_delta for m in report.models],
        "units": report.reference.nodes,
        "edges": [report.reference.edges, *(m.edges for m in report.models)],
        "implicit": bool(next(iter(report.graphs.values())).is_implicit),
    }


def _run(method: str, files: list, spectrum: bool) -> dict:
    if not isinstance(files[0], Path):  # models in memory (--quick): measured in-process
        return measure(method, files, spectrum)
    command = [sys.executable, __file__, "--worker", method, *map(str, files)]
    if spectrum:
        command.append("--spectrum")
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, check=True, env=environment)
    return json.loads(result.stdout.splitlines()[-1])


def _median(runs: list[dict], key: str) -> float:
    return float(statistics.median(run[key] for run in runs))


def _difference(ours: dict, theirs: dict) -> float:
    """Largest relative difference over delta(t) and the saturation delta of both models."""
    a = np.concatenate([np.ravel(ours["delta"]), ours["saturation"]])
    b = np.concatenate([np.ravel(theirs["delta"]), theirs["saturation"]])
    scale = np.maximum(np.abs(b), 1e-300)
    return float(np.max(np.where(a == b, 0.0, np.abs(a - b) / scale)))


def compare(architecture, folder, args) -> None:
    """Time both methods at the baseline width (and n2nonnx at full width); print the table."""
    quick = args.quick
    small = build_models(architecture, args.baseline_divisor, None if quick else folder)
    runs: dict[str, list[dict]] = {"n2nonnx": [], "baseline": []}
    for _ in range(args.rounds):  # interleaved
        for method in runs:
            runs[method].append(_run(method, small, False))
    ours, theirs = runs["n2nonnx"][-1], runs["baseline"][-1]
    edges = ours["edges"][0]
    print(
        f"\n{architecture} / {args.baseline_divisor}: {ours['units']} units, {edges:,} edges "
        f"in the dense reference ({'implicit' if ours['implicit'] else 'explicit'} in n2nonnx)"
    )
    print(
        f"{'2 models x ' + str(len(ours['times'])) + ' t + saturation':<34}{'n2nonnx':>10}{'baseline':>10}{'ratio':>8}"
    )
    rows = [("analyze wall time (s)", "analyze")] + [("load wall time (s)", "load")] * (not quick)
    for label, key in rows:
        a, b = _median(runs["n2nonnx"], key), _median(runs["baseline"], key)
        print(f"{label:<34}{a:>10.2f}{b:>10.2f}{b / max(a, 1e-9):>7.1f}x")
    if not quick:
        a, b = _median(runs["n2nonnx"], "rss_mb"), _median(runs["baseline"], "rss_mb")
        print(f"{'peak RSS (MB)':<34}{a:>10.0f}{b:>10.0f}{b / a:>7.1f}x")
    print(f"{'max relative difference':<34}{_difference(ours, theirs):>10.2e}")
    if quick:
        return
    print(
        "full width: baseline not run (its explicit graph: about 15 GB for VGG19; "
        "--baseline-divisor 1 runs it)"
        if args.baseline_divisor > 1
        else "full width: baseline above"
    )
    full = small if args.baseline_divisor == 1 else build_models(architecture, 1, folder)
    for spectrum in (False, True):
        result = _run("n2nonnx", full, spectrum)
        label = "with spectrum (CLI default)" if spectrum else "delta(t) + saturation"
        print(
            f"full width, {label:<28}: {result['units']} units, {result['edges'][0]:,} edges; "
            f"analyze {result['analyze']:.1f} s + load {result['load']:.1f} s, peak RSS "
            f"{result['rss_mb']:.0f} MB"
        )
        if not spectrum:
            _print_curve(result)


def _print_curve(result: dict) -> None:
    print(f"{'t':>12}{'rp 2%':>12}{'n2nskip 2%':>12}")
    for i, t in enumerate(result["times"]):
        print(f"{t:>12.4g}{result['delta'][0][i]:>12.4g}{result['delta'][1][i]:>12.4g}")
    print(f"{'inf':>12}" + "".join(f"{s:>12.4g}" for s in result["saturation"]))


def main(argv: list[str] | None = None) -> int:
    """Build the models, time both methods, print the comparison tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="widths / 16, in-process")
    parser.add_argument("--baseline-divisor", type=int, default=None, help="default 4 (16 quick)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds (median)")
    parser.add_argument("--worker", choices=("n2nonnx", "baseline"), help=argparse.SUPPRESS)
    parser.add_argument("--spectrum", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.worker, args.files, args.spectrum)))
        return 0
    import torch

    torch.set_num_threads(1)
    if args.baseline_divisor is None:
        args.baseline_divisor = 16 if args.quick else 4
    print("heat-diffusion connectivity: n2nonnx (implicit dense reference) vs baseline (explicit)")
    print("1 thread; random pruning to 2% and N2NSkip at 2%; analyze(dense, rp, n2nskip)")
    with tempfile.TemporaryDirectory() as folder:
        for architecture in ARCHITECTURES:
            compare(architecture, Path(folder), args)
    print(f"\npeak RSS of this process (MB): {peak_rss_mb():.0f} (building the models included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
