"""Benchmark: cost of scoring with each pruning method vs one training step in plain torch.

Models, built in torch here (random weights, torchvision-style initialisation) and
exported to ONNX with ``converters.pytorch.export``:

* ``vgg19``: torchvision's VGG19 configuration (16 convs + 3 linears, 143.7 M weights),
  input 3x224x224, batch 8 (the adaptive 7x7 pool is left out: at 224 it is the identity);
* ``resnet50``: ResNet-50 v1.5 (bottleneck blocks 3-4-6-3, 25.6 M weights), input
  3x224x224, batch 8;
* ``cifar-resnet``: a ResNet-style CNN of about 25 M parameters at 3x32x32, batch 32.

Each measurement runs in its own process so that its peak memory (max RSS) is its own:

* baseline: one forward + backward + SGD step of the torch module on one batch;
* each method: ``n2nonnx.prune(model, method, 0.05)`` with default options on the ONNX
  graph through the PyTorch backend (SNIP on one batch; GraSP on 10 samples per class of
  10 classes; SynFlow with its 100 rounds; ``--synflow-float32`` adds the float32, rescaled run).

The time is the ``prune`` call alone (loading and saving are not in it); the file size
in the title line is the masked model written by ``n2nonnx.save`` against the dense export. Threads:
``--threads`` (default 2) for torch and OpenMP in every child process.

    python examples/benchmark_prune.py --models vgg19 resnet50   # hours on 2 cores
    python examples/benchmark_prune.py --quick                   # tiny, for the test suite
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METHODS = ["random", "magnitude", "snip", "grasp", "synflow"]
VGG19 = [
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    512,
    "M",
]
CONFIGS = {
    "vgg19": {"size": 224, "batch": 8, "classes": 1000},
    "resnet50": {"size": 224, "batch": 8, "classes": 1000},
    "cifar-resnet": {"size": 32, "batch": 32, "classes": 10},
    "quick": {"size": 8, "batch": 4, "classes": 10, "iterations": 2},
}


def build_module(name: str):
    """The torch module benchmarked as ``name`` (seeded)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    if name == "vgg19":
        return vgg(VGG19, classes=1000, hidden=4096)
    if name == "resnet50":
        return resnet50()
    from n2nonnx.zoo import build as zoo_build

    if name == "cifar-resnet":
        return zoo_build("resnet", widths=[64, 128, 256, 512], blocks=4, classes=10)
    module = zoo_build("resnet", widths=[8, 16], blocks=1, classes=10)
    assert isinstance(module, nn.Module)
    return module


def vgg(config: list, classes: int, hidden: int):
    """A torchvision-style VGG for 224x224 inputs (features, then three linear layers)."""
    from torch import nn

    layers: list[nn.Module] = []
    channels = 3
    for item in config:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=True)]
            channels = item
    module = nn.Sequential(
        *layers,
        nn.Flatten(),
        nn.Linear(channels * 7 * 7, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(),
        nn.Linear(hidden, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(),
        nn.Linear(hidden, classes),
    )
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, 0, 0.01)
            nn.init.zeros_(layer.bias)
    return module


def resnet50(classes: int = 1000):
    """ResNet-50 v1.5 as torchvision builds it (stride on the 3x3 conv of a bottleneck)."""
    import torch
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self, channels_in: int, width: int, stride: int) -> None:
            super().__init__()
            out = width * 4
            self.body = nn.Sequential(
                nn.Conv2d(channels_in, width, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, stride, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, out, 1, bias=False),
                nn.BatchNorm2d(out),
            )
            self.shortcut = (
                nn.Sequential(
                    nn.Conv2d(channels_in, out, 1, stride, bias=False), nn.BatchNorm2d(out)
                )
                if stride != 1 or channels_in != out
                else nn.Identity()
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.body(x) + self.shortcut(x))

    layers: list[nn.Module] = [
        nn.Conv2d(3, 64, 7, 2, 3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, 1),
    ]
    channels = 64
    for width, blocks, stride in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]:
        for index in range(blocks):
            layers.append(Bottleneck(channels, width, stride if index == 0 else 1))
            channels = width * 4
    module = nn.Sequential(
        *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, classes)
    )
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
    return module


def build(name: str, config: dict, path: Path) -> int:
    """Export the benchmark model to ``path``; returns its parameter count."""
    import torch

    from converters.pytorch import export

    module = build_module(name)
    export(module, torch.randn(1, 3, config["size"], config["size"]), path)
    torch.save(module.state_dict(), path.with_suffix(".pt"))
    return sum(p.numel() for p in module.parameters())


def file_size(path: Path) -> int:
    """Bytes of an ONNX file and its external data files."""
    return sum(p.stat().st_size for p in path.parent.glob(path.stem + "*") if p.suffix != ".pt")


def measure(what: str, name: str, config: dict, path: Path) -> dict:
    """Run one measurement in this process (called in a child process)."""
    import numpy as np
    import torch

    import n2nonnx
    from n2nonnx.data.dataset import TrainTestData

    torch.manual_seed(0)
    batch, size = config["batch"], config["size"]
    options = {"iterations": config["iterations"]} if "iterations" in config else {}
    file_mib = None
    if what == "baseline":
        module = build_module(name)
        module.load_state_dict(torch.load(path.with_suffix(".pt")))
        module.train()
        optimizer = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)
        x, y = torch.randn(batch, 3, size, size), torch.randint(0, config["classes"], (batch,))
        started = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(module(x), y)
        loss.backward()
        optimizer.step()
        seconds = time.perf_counter() - started
        file_mib = file_size(path) / 2**20
    else:
        model = n2nonnx.load(path)
        method = what.split("-")[0]
        if what == "synflow-float32":
            options["precision"] = "float32"
        count = max(batch, 100)  # GraSP uses 10 per class of the 10 labels
        x = torch.randn(count, 3, size, size)
        y = torch.arange(count) % 10
        data = TrainTestData(x, y, x[:10], y[:10], name="random")
        started = time.perf_counter()
        pruned = n2nonnx.prune(model, method, 0.05, data=data, batch_size=batch, options=options)
        seconds = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as folder:
            written = n2nonnx.save(pruned, Path(folder) / "masked.onnx", validate=False)
            file_mib = file_size(written) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux: KiB)
    return {
        "what": what,
        "seconds": seconds,
        "peak_mib": float(np.round(peak, 1)),
        "file_mib": file_mib,
    }


def run_model(
    name: str, config: dict, threads: int, float32: bool, methods: list[str]
) -> tuple[int, dict]:
    """Every row for one model, each in a fresh process."""
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    rows = ["baseline", *methods, *(["synflow-float32"] if float32 else [])]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{name}.onnx"
        parameters = build(name, config, path)
        results = {}
        for what in rows:
            command = [
                sys.executable,
                __file__,
                "--one",
                what,
                "--model",
                str(path),
                "--name",
                name,
                "--threads",
                str(threads),
            ]
            child = subprocess.run(
                command, capture_output=True, text=True, check=False, env=environment
            )
            if child.returncode != 0:
                raise SystemExit(f"{name} {what} failed:\n{child.stderr}")
            results[what] = json.loads(child.stdout.strip().splitlines()[-1])
            print(f"  {name} {what}: {results[what]}", file=sys.stderr, flush=True)
    return parameters, results


def print_table(name: str, config: dict, parameters: int, results: dict) -> None:
    """The title line (model, sizes, files), then one row per method against the step."""
    base = results["baseline"]
    masked = max(r["file_mib"] for what, r in results.items() if what != "baseline")
    print(
        f"{name}: {parameters / 1e6:.1f} M parameters, input 3x{config['size']}x{config['size']}, "
        f"batch {config['batch']}, SynFlow {config.get('iterations', 100)} rounds; dense file "
        f"{base['file_mib']:.1f} MiB, masked file {masked:.1f} MiB ({masked / base['file_mib']:.2f}x)"
    )
    print(f"{'method':<22}{'seconds':>10}{'x step':>9}{'peak MiB':>11}{'x step':>9}")
    print(
        f"{'torch fwd+bwd+step':<22}{base['seconds']:>10.2f}{1:>9.2f}{base['peak_mib']:>11.0f}{1:>9.2f}"
    )
    for what, r in results.items():
        if what != "baseline":
            print(
                f"{what:<22}{r['seconds']:>10.2f}{r['seconds'] / base['seconds']:>9.2f}"
                f"{r['peak_mib']:>11.0f}{r['peak_mib'] / base['peak_mib']:>9.2f}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, for the test suite")
    parser.add_argument(
        "--models",
        nargs="+",
        default=["vgg19", "resnet50"],
        choices=["vgg19", "resnet50", "cifar-resnet"],
    )
    parser.add_argument("--threads", type=int, default=2, help="torch / OpenMP threads (default 2)")
    parser.add_argument(
        "--synflow-float32", action="store_true", help="add SynFlow's float32 (rescaled) run"
    )
    parser.add_argument(
        "--methods", nargs="+", default=METHODS, choices=METHODS, help="criteria to measure"
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(measure(args.one, args.name, CONFIGS[args.name], Path(args.model))))
        return 0
    models = ["quick"] if args.quick else args.models
    for index, name in enumerate(models):
        parameters, results = run_model(
            name,
            CONFIGS[name],
            1 if args.quick else args.threads,
            args.synflow_float32,
            args.methods,
        )
        print_table(name, CONFIGS[name], parameters, results)
        if index < len(models) - 1:
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
