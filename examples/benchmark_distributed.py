"""Data-parallel training throughput: 1 process against 2 processes (DDP, gloo, CPU).

A sparse MLP (every hidden weight masked at ``--density``) trains with
:func:`n2nonnx.training.train` on synthetic data with the same global batch in each
configuration, interleaved over ``--rounds`` rounds, fresh processes each time:

- ``1 proc x 1 thread``: the baseline;
- ``1 proc x 2 threads``: the same cores used by intra-op threads instead;
- ``2 procs x 1 thread``: two ranks, each half of every batch, gradients all-reduced.

Throughput is training samples per second over the epochs after the first (the first pays
warm-up). The 2-process run also times training steps with and without the gradient
all-reduce (DDP's ``no_sync``): their difference over the full step is the share of a step
spent waiting for communication. Medians over rounds; ratios against the baseline.

    python examples/benchmark_distributed.py            # 64-1024-1024-10 MLP, batch 512, 3 rounds
    python examples/benchmark_distributed.py --quick    # tiny, 1 round (the test suite)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.multiprocessing as mp
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from n2nonnx.backend import OnnxModule  # noqa: E402
from n2nonnx.data import make_data  # noqa: E402
from n2nonnx.graph.masking import gate  # noqa: E402
from n2nonnx.training import train  # noqa: E402

CONFIGS = (("1 proc x 1 thread", 1, 1), ("1 proc x 2 threads", 1, 2), ("2 procs x 1 thread", 2, 1))


def sparse_mlp(sizes: list[int], density: float, seed: int = 0) -> onnx.ModelProto:
    """Gemm layers of the given widths with Relu between them; hidden weights masked."""
    rng = np.random.default_rng(seed)
    nodes, initializers, current = [], [], "x"
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        weight, bias, out = f"w{index}", f"b{index}", f"z{index}"
        initializers += [
            numpy_helper.from_array(
                rng.normal(0, (2 / fan_in) ** 0.5, (fan_out, fan_in)).astype(np.float32), weight
            ),
            numpy_helper.from_array(np.zeros(fan_out, np.float32), bias),
        ]
        nodes.append(
            helper.make_node("Gemm", [current, weight, bias], [out], transB=1, name=f"fc{index}")
        )
        current = out
        if index < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [out], [f"a{index}"], name=f"relu{index}"))
            current = f"a{index}"
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", sizes[0]])],
        [helper.make_tensor_value_info(current, TensorProto.FLOAT, ["N", sizes[-1]])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for index in range(1, len(sizes) - 2):
        gate(model.graph, f"w{index}", rng.random((sizes[index + 1], sizes[index])) < density)
    return model


def blobs(samples: int, features: int, classes: int, seed: int = 0):
    """Gaussian blobs: ``samples`` training samples and 256 held-out ones."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (classes, features))
    labels = rng.integers(0, classes, samples + 256)
    x = centres[labels] + rng.normal(0, 1, (len(labels), features))
    return make_data(x[:samples], labels[:samples], x[samples:], labels[samples:], name="blobs")


def _worker(rank: int, world: int, threads: int, setup: dict, out: str) -> None:
    """One process: train, then (several processes) time steps with and without the all-reduce."""
    torch.set_num_threads(threads)
    if world > 1:
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    model = sparse_mlp(setup["sizes"], setup["density"])
    data = blobs(setup["samples"], setup["sizes"][0], setup["sizes"][-1])
    result = train(
        model,
        data,
        epochs=setup["epochs"],
        batch_size=setup["batch"],
        optimizer="sgd",
        lr=0.01,
        schedule="none",
        progress=False,
        distributed=world > 1,
    )
    timed = result.history.records[1:]
    report = {
        "samples_per_s": setup["samples"] * len(timed) / sum(record.seconds for record in timed)
    }
    if world > 1:
        report.update(
            _step_times(
                OnnxModule(result.model.proto), data, setup["batch"] // world, setup["steps"]
            )
        )
    if rank == 0:
        Path(out).write_text(json.dumps(report))


def _step_times(module: torch.nn.Module, data, batch: int, steps: int) -> dict[str, float]:
    """Median step time (ms) of DDP steps with and without the gradient all-reduce."""
    from n2nonnx.training import distributed as parallel

    ctx = parallel.context()
    wrapped = parallel.wrap(module, ctx, find_unused=False)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.0)
    x, y = data.x_train[: batch * steps], data.y_train[: batch * steps]

    def step(index: int) -> None:
        scores = wrapped(x[index * batch : (index + 1) * batch])
        loss = torch.nn.functional.cross_entropy(scores, y[index * batch : (index + 1) * batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        module.apply_masks_()

    times: dict[str, list[float]] = {"step_ms": [], "no_sync_step_ms": []}
    for index in range(steps):  # interleaved: all-reduce, no all-reduce, ...
        for label in (
            ("step_ms", "no_sync_step_ms") if index % 2 == 0 else ("no_sync_step_ms", "step_ms")
        ):
            torch.distributed.barrier()
            started = time.perf_counter()
            if label == "no_sync_step_ms":
                with wrapped.no_sync():
                    step(index)
            else:
                step(index)
            times[label].append((time.perf_counter() - started) * 1000)
    return {label: statistics.median(values[1:] or values) for label, values in times.items()}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def measure(world: int, threads: int, setup: dict) -> dict[str, float]:
    """Run one configuration in fresh (forked) processes and return rank 0's report."""
    with tempfile.TemporaryDirectory() as folder:
        out = str(Path(folder) / "report.json")
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
        mp.start_processes(
            _worker, args=(world, threads, setup, out), nprocs=world, join=True, start_method="fork"
        )
        return json.loads(Path(out).read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes, one round (the test suite)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument(
        "--batch-size", type=int, default=512, help="global batch (both configurations)"
    )
    args = parser.parse_args(argv)
    setup = {
        "sizes": [64, args.hidden, args.hidden, 10],
        "density": 0.1,
        "samples": 16384,
        "epochs": 3,
        "batch": args.batch_size,
        "steps": 20,
    }
    rounds = args.rounds
    # forked workers inherit these imports (seconds each); the parent runs no torch op itself
    torch.optim.SGD([torch.zeros(1, requires_grad=True)])
    torch.nn.parallel.DistributedDataParallel  # noqa: B018
    if args.quick:
        setup.update(sizes=[16, 32, 32, 4], samples=512, epochs=2, batch=64, steps=4)
        rounds = 1
    print(
        f"sparse MLP {setup['sizes']} (hidden weights {setup['density']:.0%} dense), "
        f"{setup['samples']} samples, global batch {setup['batch']}, {setup['epochs']} epochs, "
        f"{rounds} round(s), {os.cpu_count()} CPU cores, torch {torch.__version__}",
        flush=True,
    )
    runs: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in CONFIGS}
    for round_index in range(rounds):
        order = CONFIGS if round_index % 2 == 0 else tuple(reversed(CONFIGS))
        for label, world, threads in order:
            runs[label].append(measure(world, threads, setup))
            print(
                f"  round {round_index + 1}: {label:20s} {runs[label][-1]['samples_per_s']:10.0f} samples/s",
                flush=True,
            )
    baseline = statistics.median(run["samples_per_s"] for run in runs[CONFIGS[0][0]])
    print(f"\n{'configuration':22s} {'samples/s':>10s} {'vs 1x1':>7s}")
    for label, _, _ in CONFIGS:
        rate = statistics.median(run["samples_per_s"] for run in runs[label])
        print(f"{label:22s} {rate:10.0f} {rate / baseline:6.2f}x")
    ddp = runs[CONFIGS[2][0]]
    step = statistics.median(run["step_ms"] for run in ddp)
    quiet = statistics.median(run["no_sync_step_ms"] for run in ddp)
    share = max(0.0, step - quiet) / step
    print(
        f"\n2 procs, one step (per-rank batch {setup['batch'] // 2}): {step:.2f} ms with the gradient "
        f"all-reduce, {quiet:.2f} ms without (no_sync): communication share {share:.0%}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
