"""Benchmark: cost of scoring with each pruning method vs one training step in plain torch.

A ResNet-style CNN of about 25 M parameters (basic blocks, widths 64-128-256-512, random
weights) is built in torch and exported to ONNX. Each measurement runs in its own process
so that its peak memory (max RSS) is its own:

* baseline: one forward + backward + SGD step of the torch module, batch 32;
* each method: ``n2nonnx.prune`` scoring on the ONNX graph through the PyTorch backend
  (SNIP on one batch of 32; GraSP on 10 samples per class; SynFlow with its rounds).

The table prints time and peak memory side by side with the baseline, as ratios.

    python examples/benchmark_prune.py            # full size (minutes)
    python examples/benchmark_prune.py --quick    # tiny, for the test suite
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METHODS = ["random", "magnitude", "snip", "grasp", "synflow"]
FULL = {"widths": [64, 128, 256, 512], "blocks": 4, "size": 32, "batch": 32, "iterations": 20}
QUICK = {"widths": [8, 16], "blocks": 1, "size": 8, "batch": 4, "iterations": 2}


def build(config: dict, path: Path) -> int:
    """Export the benchmark model to ``path``; returns its parameter count."""
    import torch

    from converters.pytorch import export
    from n2nonnx.zoo import build as zoo_build

    torch.manual_seed(0)
    module = zoo_build("resnet", widths=config["widths"], blocks=config["blocks"], classes=10)
    export(module, torch.randn(1, 3, config["size"], config["size"]), path)
    torch.save(module.state_dict(), path.with_suffix(".pt"))
    return sum(p.numel() for p in module.parameters())


def measure(what: str, config: dict, path: Path) -> dict:
    """Run one measurement in this process (called in a child process)."""
    import numpy as np
    import torch

    import n2nonnx
    from n2nonnx.data.dataset import TrainTestData

    torch.manual_seed(0)
    batch, size = config["batch"], config["size"]
    if what == "baseline":
        from n2nonnx.zoo import build as zoo_build

        module = zoo_build("resnet", widths=config["widths"], blocks=config["blocks"], classes=10)
        module.load_state_dict(torch.load(path.with_suffix(".pt")))
        optimizer = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)
        x, y = torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,))
        started = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(module(x), y)
        loss.backward()
        optimizer.step()
        seconds = time.perf_counter() - started
    else:
        model = n2nonnx.load(path)
        count = max(batch, 100)  # GraSP uses 10 per class
        x = torch.randn(count, 3, size, size)
        y = torch.arange(count) % 10
        data = TrainTestData(x, y, x[:10], y[:10], name="random")
        started = time.perf_counter()
        n2nonnx.prune(model, what, 0.05, data=data, batch_size=batch,
                      options={"iterations": config["iterations"]})
        seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux: KiB)
    return {"what": what, "seconds": seconds, "peak_mib": float(np.round(peak, 1))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, for the test suite")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    config = QUICK if args.quick else FULL
    if args.one:
        print(json.dumps(measure(args.one, config, Path(args.model))))
        return 0
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "resnet.onnx"
        parameters = build(config, path)
        results = {}
        for what in ["baseline", *METHODS]:
            command = [sys.executable, __file__, "--one", what, "--model", str(path)]
            if args.quick:
                command.append("--quick")
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            results[what] = json.loads(output.strip().splitlines()[-1])
    base = results["baseline"]
    print(f"ResNet-style CNN, {parameters / 1e6:.1f} M parameters, input 3x{config['size']}x{config['size']}, "
          f"batch {config['batch']}, SynFlow {config['iterations']} rounds")
    print(f"{'method':<22}{'seconds':>10}{'x step':>9}{'peak MiB':>11}{'x step':>9}")
    print(f"{'torch fwd+bwd+step':<22}{base['seconds']:>10.2f}{1:>9.2f}{base['peak_mib']:>11.0f}{1:>9.2f}")
    for what in METHODS:
        r = results[what]
        print(f"{what:<22}{r['seconds']:>10.2f}{r['seconds'] / base['seconds']:>9.2f}"
              f"{r['peak_mib']:>11.0f}{r['peak_mib'] / base['peak_mib']:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
