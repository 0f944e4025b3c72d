"""Benchmark: heat-diffusion delta(t) on a ResNet-50-scale unit graph (27,563 units).

The graphs are layered random graphs with ResNet-50's channel widths and wiring (stem,
16 bottleneck blocks with their residual adds, downsample convs, a 1000-way FC): a
reference at 10% weight density, the same network randomly pruned to 2%, and an
N2NSkip-like one (1% sequential + 1% random skip connections to the layer two ahead).
A conv's channel pair is connected when any of its k x k weights survives.

Compared, for delta(t) of both models at 20 time points (default times of the report):

* n2nonnx: ``heat.heat_state`` (expm_multiply chained over the sorted time increments);
* baseline: expm_multiply called once per time point, each from t = 0.

Run ``python examples/benchmark_connectivity.py`` (full size) or ``--quick`` (a 1/16-width
version used by the test suite).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import expm_multiply

from n2nonnx.connectivity import UnitGraph, default_times, heat
from n2nonnx.connectivity.unit_graph import Block

STAGES = ((64, 256, 3), (128, 512, 4), (256, 1024, 6), (512, 2048, 3))  # mid, out, blocks


def resnet50_layers(width_divisor: int = 1):
    """(name, units, kernel area, sources, skip_source) of a ResNet-50 in topological order.

    ``sources`` are the layers whose units feed the layer's input channels (several after a
    residual add: unit c of each of them feeds input channel c).
    """

    def w(units: int) -> int:
        return max(1, units // width_divisor)

    layers = [("input:x", 3, 0, []), ("conv1", w(64), 49, ["input:x"])]
    stream = ["conv1"]
    for s, (mid, out, blocks) in enumerate(STAGES):
        for b in range(blocks):
            name = f"layer{s + 1}.{b}"
            layers.append((f"{name}.conv1", w(mid), 1, list(stream)))
            layers.append((f"{name}.conv2", w(mid), 9, [f"{name}.conv1"]))
            layers.append((f"{name}.conv3", w(out), 1, [f"{name}.conv2"]))
            if b == 0:
                layers.append((f"{name}.downsample", w(out), 1, list(stream)))
                stream = [f"{name}.conv3", f"{name}.downsample"]
            else:
                stream = [*stream, f"{name}.conv3"]
    layers.append(("fc", 1000 // width_divisor, 1, list(stream)))
    return layers


def random_unit_graph(layers, density: float, skip_density: float, seed: int) -> UnitGraph:
    """A random layered unit graph: each weight kept with probability ``density``."""
    rng = np.random.default_rng(seed)
    blocks, start = {}, 0
    for depth, (name, units, _, _) in enumerate(layers):
        blocks[name] = Block(name, start, units, depth)
        start += units
    rows, cols = [], []
    main = [name for name, _, _, _ in layers]
    for position, (name, units, area, sources) in enumerate(layers):
        if not sources:
            continue
        in_units = blocks[sources[0]].size
        channel_density = 1.0 - (1.0 - density) ** area
        targets, channels = _sample_pairs(rng, units, in_units, channel_density)
        for source in sources:
            rows.append(blocks[source].start + channels)
            cols.append(blocks[name].start + targets)
        if skip_density > 0 and position >= 3:  # N2NSkip from the layer two back
            source = blocks[main[position - 2]]
            targets, channels = _sample_pairs(rng, units, source.size, skip_density * area)
            rows.append(source.start + channels)
            cols.append(blocks[name].start + targets)
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    flow = sp.csr_array((np.ones(rows.size), (rows, cols)), shape=(start, start))
    flow.sum_duplicates()
    flow.data[:] = 1.0
    return UnitGraph(
        flow=heat.compact(flow),
        blocks=tuple(blocks.values()),
        output_nodes=np.arange(blocks["fc"].start, blocks["fc"].stop),
    )


def _sample_pairs(rng, units: int, in_units: int, probability: float):
    """Random (target, source) unit pairs, each pair present with ``probability``."""
    probability = min(probability, 1.0)
    count = rng.binomial(units * in_units, probability)
    flat = rng.choice(units * in_units, size=count, replace=False)
    return flat // in_units, flat % in_units


def _timed(function):
    tracemalloc.start()
    begin = time.perf_counter()
    result = function()
    elapsed = time.perf_counter() - begin
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, elapsed, peak


def _ours(graphs, sources, times):
    states = [heat.heat_state(graph.adjacency, sources, times) for graph in graphs]
    return [heat.heat_delta(states[0], s) for s in states[1:]]


def _baseline(graphs, sources, times):
    states = []
    for graph in graphs:
        negative = -heat.laplacian(graph.adjacency)
        states.append(np.stack([expm_multiply(t * negative, sources) for t in times]))
    return [heat.heat_delta(states[0], s) for s in states[1:]]


def main(argv: list[str] | None = None) -> int:
    """Build the graphs, time both methods, print the comparison table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1/16 widths, 6 time points")
    parser.add_argument("--times", type=int, default=20, help="number of time points")
    args = parser.parse_args(argv)
    divisor, count = (16, 6) if args.quick else (1, args.times)
    layers = resnet50_layers(divisor)
    begin = time.perf_counter()
    graphs = [
        random_unit_graph(layers, 0.10, 0.0, seed=0),
        random_unit_graph(layers, 0.02, 0.0, seed=1),
        random_unit_graph(layers, 0.01, 0.01, seed=2),
    ]
    build = time.perf_counter() - begin
    names = ["reference 10%", "pruned 2%", "n2nskip 1%+1%"]
    sources = heat.heat_sources(graphs[0].n_nodes, graphs[0].input_nodes)
    times = default_times(graphs[0], count)
    print(
        f"unit graphs built in {build:.1f} s ({len(layers) - 1} layers, ResNet-50 widths / {divisor})"
    )
    for name, graph in zip(names, graphs, strict=True):
        degree = np.asarray(graph.adjacency.sum(axis=0)).ravel()
        print(
            f"  {name:<15} {graph.n_nodes:>7} units {graph.n_edges:>10} edges  "
            f"max degree {degree.max():>6.0f}  mean {degree.mean():>7.1f}"
        )
    print(f"{count} times from {times[0]:.3g} to {times[-1]:.3g}")
    ours, ours_time, ours_peak = _timed(lambda: _ours(graphs, sources, times))
    base, base_time, base_peak = _timed(lambda: _baseline(graphs, sources, times))
    saturation = [heat.saturation_state(g.adjacency, sources) for g in graphs]
    difference = max(
        float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))
        for a, b in zip(ours, base, strict=True)
    )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB -> MB on Linux
    print()
    print(
        f"{'delta(t), 2 models x ' + str(count) + ' t':<32}{'n2nonnx':>12}{'baseline':>12}{'ratio':>8}"
    )
    print(
        f"{'wall time (s)':<32}{ours_time:>12.2f}{base_time:>12.2f}{base_time / ours_time:>7.1f}x"
    )
    print(
        f"{'peak traced memory (MB)':<32}{ours_peak / 2**20:>12.1f}{base_peak / 2**20:>12.1f}"
        f"{base_peak / max(ours_peak, 1):>7.1f}x"
    )
    print(f"{'max relative difference':<32}{difference:>12.2e}")
    print(f"{'peak RSS of the process (MB)':<32}{rss:>12.0f}")
    print()
    print(f"{'t':>11}{names[1]:>15}{names[2]:>15}")
    for i, t in enumerate(times):
        print(f"{t:>11.4g}{ours[0][i]:>15.4g}{ours[1][i]:>15.4g}")
    print(
        f"{'inf':>11}"
        + "".join(f"{heat.heat_delta(saturation[0], s):>15.4g}" for s in saturation[1:])
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
