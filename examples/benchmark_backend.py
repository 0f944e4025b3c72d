"""Training-step cost of the ONNX backend (OnnxModule) against hand-written PyTorch.

For an MLP and a small ResNet, the same torch module is exported to ONNX and run both
ways with the SAME weights and the SAME batch: one step is forward + cross-entropy +
backward + SGD (momentum) update, in training mode (BatchNorm uses batch statistics).
Steps are interleaved (torch, onnx, onnx, torch, ...) after a warm-up, and the median of
each is reported with the ratio onnx / torch (target: at most 1.15).

    python examples/benchmark_backend.py            # full size: 784-1024-1024-10 @128, ResNet @32x3x32x32
    python examples/benchmark_backend.py --quick    # tiny sizes, a few steps (the test suite)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from converters.pytorch import export  # noqa: E402
from n2nonnx import zoo  # noqa: E402
from n2nonnx.backend import OnnxModule  # noqa: E402

TARGET_RATIO = 1.15


def SmallResNet(width: int, classes: int = 10) -> nn.Module:  # noqa: N802 (a model factory)
    """Stem conv, three residual blocks (the last two stride 2), global average pool, linear."""
    return zoo.resnet(widths=(width, 2 * width, 4 * width), blocks=1, classes=classes)


def mlp(sizes: Sequence[int]) -> nn.Module:
    """Linear layers of the given widths with ReLU between them."""
    return zoo.mlp(in_features=sizes[0], hidden=tuple(sizes[1:-1]), classes=sizes[-1])


@dataclass
class Case:
    """One benchmark row: a torch module and a batch."""

    label: str
    module: nn.Module
    batch: torch.Tensor
    classes: int = 10


@dataclass
class Row:
    """Median step times of one case (milliseconds) and the forward agreement."""

    label: str
    batch_size: int
    torch_ms: float
    onnx_ms: float
    max_abs_diff: float

    @property
    def ratio(self) -> float:
        """OnnxModule step time over torch step time."""
        return self.onnx_ms / self.torch_ms


def cases(quick: bool) -> list[Case]:
    """The MLP and ResNet cases, tiny with ``quick``."""
    if quick:
        return [
            Case("mlp 64-128-128-10", mlp([64, 128, 128, 10]), torch.randn(16, 64)),
            Case("resnet w8 3x16x16", SmallResNet(8), torch.randn(4, 3, 16, 16)),
        ]
    return [
        Case("mlp 784-1024-1024-10", mlp([784, 1024, 1024, 10]), torch.randn(128, 784)),
        Case("resnet w32 3x32x32", SmallResNet(32), torch.randn(32, 3, 32, 32)),
    ]


def randomize_batchnorm(module: nn.Module, generator: torch.Generator) -> None:
    """Give BatchNorm layers distinct, trained-looking statistics.

    Fresh BatchNorm has weight == running_var == 1 and bias == running_mean == 0, and the
    TorchScript exporter then shares one initializer between them (through Identity nodes).
    """
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                layer.weight.copy_(torch.rand(layer.weight.shape, generator=generator) + 0.5)
                layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator) * 0.1)
                layer.running_mean.copy_(
                    torch.randn(layer.running_mean.shape, generator=generator) * 0.1
                )
                layer.running_var.copy_(
                    torch.rand(layer.running_var.shape, generator=generator) + 0.5
                )


def make_step(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One training step (forward, loss, backward, SGD update) of ``module`` on a fixed batch."""
    optimizer = torch.optim.SGD(module.parameters(), lr=1e-3, momentum=0.9)
    module.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(module(x), y).backward()
        optimizer.step()

    return step


def timed(step: Callable[[], None]) -> float:
    """Seconds one call of ``step`` takes."""
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def measure(case: Case, reps: int, warmup: int) -> Row:
    """Export the case, check both modules agree, then time their steps side by side."""
    generator = torch.Generator().manual_seed(0)
    randomize_batchnorm(case.module, generator)
    proto = export(case.module, case.batch[:2]).proto
    onnx_module = OnnxModule(proto)
    case.module.eval()
    onnx_module.eval()
    with torch.no_grad():
        max_abs_diff = float((case.module(case.batch) - onnx_module(case.batch)).abs().max())
    labels = torch.randint(0, case.classes, (len(case.batch),), generator=generator)
    torch_step = make_step(case.module, case.batch, labels)
    onnx_step = make_step(onnx_module, case.batch, labels)
    for _ in range(warmup):
        torch_step()
        onnx_step()
    torch_times, onnx_times = [], []
    for rep in range(reps):
        order = (torch_step, onnx_step) if rep % 2 == 0 else (onnx_step, torch_step)
        for step in order:
            (torch_times if step is torch_step else onnx_times).append(timed(step))
    return Row(
        case.label,
        len(case.batch),
        1e3 * statistics.median(torch_times),
        1e3 * statistics.median(onnx_times),
        max_abs_diff,
    )


def format_table(rows: Sequence[Row]) -> str:
    """The results as a text table with the onnx / torch ratio."""
    lines = [
        f"{'model':<24}{'batch':>6}{'torch ms':>11}{'onnx ms':>11}{'ratio':>8}{'max|diff|':>11}",
        "-" * 71,
    ]
    for row in rows:
        flag = "" if row.ratio <= TARGET_RATIO else "  (above target)"
        lines.append(
            f"{row.label:<24}{row.batch_size:>6}{row.torch_ms:>11.2f}{row.onnx_ms:>11.2f}"
            f"{row.ratio:>7.2f}x{row.max_abs_diff:>11.1e}{flag}"
        )
    lines.append(f"ratio = OnnxModule step / torch step (median); target <= {TARGET_RATIO:.2f}x")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the table.

    Args:
        argv: command-line arguments (see ``--help``).

    Returns:
        0, or 1 with ``--check`` when a ratio is above the target.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few steps")
    parser.add_argument("--reps", type=int, help="timed steps per module (default 50, quick 3)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default 5, quick 1)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a ratio is above target")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    reps = args.reps or (3 if args.quick else 50)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 5)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {reps} timed steps each")
    rows = [measure(case, reps, warmup) for case in cases(args.quick)]
    print(format_table(rows))
    return 1 if args.check and any(row.ratio > TARGET_RATIO for row in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
