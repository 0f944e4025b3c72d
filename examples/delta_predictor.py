"""Does connectivity before training predict accuracy after it? Spearman over study cells.

For every finished study cell (any folder ``n2nonnx study`` wrote), the predictors are
computed on the cell's sparse model *before training*, rebuilt from its configuration and
seed (pruning and skip sampling are deterministic; the masks do not change in training, so
the binary unit graph is the same before and after):

* heat-diffusion delta at saturation, and at each time of the report's default grid: at
  one time index shared by every group (the one with the best mean rho, chosen once) and
  at the best time of each group (chosen after the fact: an optimistic figure);
* dead units (units on no input-to-output path);
* the share of kept weights that lie on a live input-to-output path.

Within each (architecture, density) group the rank correlation (Spearman's rho) between
each predictor and the trained test accuracy is printed, with the number of cells. A good
predictor of quality has rho far from 0 (negative for delta and dead units, positive for
live weights) in every group.

    python examples/delta_predictor.py examples/study_results
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

import n2nonnx
from n2nonnx.connectivity import analyze, dead_weights
from n2nonnx.data import resolve_data
from n2nonnx.masks import mask_arrays
from n2nonnx.pipeline.job import JobConfig, build_sparse
from n2nonnx.study import load_cells
from n2nonnx.study.grid import arch_spec
from n2nonnx.zoo import export_builtin


def _predictors(dense, dataset, record: dict) -> dict[str, float | list[float]]:
    """Connectivity figures of one cell's sparse model before training."""
    config = JobConfig(**{**record["config"], "connectivity": False})
    model = build_sparse(dense, dataset, config)
    report = analyze(dense, model, names=["model"])
    figures = report.models[0]
    kept = sum(int(np.count_nonzero(mask)) for mask in mask_arrays(model).values())
    return {
        "times": report.times.tolist(),
        "delta": figures.delta.tolist(),
        "saturation_delta": figures.saturation_delta,
        "dead_units": figures.total_dead,
        "live_weights": 1 - sum(dead_weights(model).values()) / kept,
    }


def _rho(x, y) -> float | None:
    """Spearman's rho, or None where a predictor does not vary within the group."""
    if len(set(np.round(x, 12))) < 2 or len(set(y)) < 2:
        return None
    return float(spearmanr(x, y).statistic)


def _shown(rho: float | None) -> str:
    return "const" if rho is None else f"{rho:+.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="study folders (with cells/)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the per-cell predictors here")
    parser.add_argument(
        "--min-cells", type=int, default=6, help="groups with fewer cells are not correlated"
    )
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    groups: dict[tuple[str, float], list[tuple[float, dict]]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as scratch:
        dense_models, datasets = {}, {}
        for folder in args.folders:
            for record in load_cells(folder):
                if record["variant"] == "dense" or record["config"]["method"] == "scl":
                    continue  # SCL's masks come from training: nothing to predict before it
                arch = record["arch"]
                if arch not in dense_models:
                    factory, options = arch_spec(arch)
                    path = export_builtin(factory, Path(scratch) / f"{arch}.onnx", 0, options)
                    dense_models[arch] = n2nonnx.load(path)
                dense = dense_models[arch]
                info = dense.graph_inputs[0]
                key = (arch, record["seed"])
                if key not in datasets:
                    datasets[key] = resolve_data(
                        record["settings"]["data"],
                        input_shape=info.shape,
                        seed=record["seed"],
                        input_name=info.name,
                    )
                figures = _predictors(dense, datasets[key], record)
                figures.update(label=record.get("label", record["variant"]), seed=record["seed"])
                accuracy = 100 * record["onnxruntime_test_accuracy"]
                groups[(arch, record["config"]["density"])].append((accuracy, figures))
                print(
                    f"{arch:9s} {record.get('label', record['variant']):45s} "
                    f"d{record['config']['density']:<5g} s{record['seed']}  acc {accuracy:5.1f}  "
                    f"delta {figures['saturation_delta']:.3g}  dead {figures['dead_units']}  "
                    f"live {figures['live_weights']:.3f}",
                    flush=True,
                )
    kept = {
        key: members for key, members in sorted(groups.items()) if len(members) >= args.min_cells
    }
    per_time = {  # group -> rho of delta at each index of the default time grid
        key: [
            _rho([f["delta"][i] for _, f in members], [a for a, _ in members])
            for i in range(len(members[0][1]["delta"]))
        ]
        for key, members in kept.items()
    }
    # One time index for every group (the grid scales with the dense graph's mean degree):
    # the one with the best mean rho, so chosen once rather than per group.
    counts = len(next(iter(per_time.values()), []))
    means = [
        np.mean([r[i] for r in per_time.values() if r[i] is not None] or [0.0])
        for i in range(counts)
    ]
    shared = int(np.argmin(means)) if counts else 0
    print(
        f"\n| arch | density | cells | delta at saturation | delta at one t for all (index {shared}) "
        "| delta, best t of the group | dead units | live-weight share |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    dump, columns = [], defaultdict(list)
    for (arch, density), members in kept.items():
        accuracy = [a for a, _ in members]
        figures = [f for _, f in members]
        times = figures[0]["times"]
        scored = [
            (rho, t)
            for rho, t in zip(per_time[(arch, density)], times, strict=True)
            if rho is not None
        ]
        best = min(scored, default=(None, None))  # most negative: larger delta, lower accuracy
        row = {
            "saturation": _rho([f["saturation_delta"] for f in figures], accuracy),
            "shared": per_time[(arch, density)][shared],
            "best": best[0],
            "dead": _rho([f["dead_units"] for f in figures], accuracy),
            "live": _rho([f["live_weights"] for f in figures], accuracy),
        }
        for name, rho in row.items():
            columns[name].append(0.0 if rho is None else rho)
        print(
            f"| {arch} | {density:.0%} | {len(members)} | {_shown(row['saturation'])} "
            f"| {_shown(row['shared'])} (t={times[shared]:.3g}) | {_shown(row['best'])}"
            + (f" (t={best[1]:.3g})" if best[1] is not None else "")
            + f" | {_shown(row['dead'])} | {_shown(row['live'])} |"
        )
        dump.append({"arch": arch, "density": density, "accuracy": accuracy, "figures": figures})
    if columns:
        print(
            "| mean over groups (const = 0) | | | "
            + " | ".join(
                f"{np.mean(columns[n]):+.2f}"
                for n in ("saturation", "shared", "best", "dead", "live")
            )
            + " |"
        )
    if args.json:
        args.json.write_text(json.dumps(dump, indent=1))


if __name__ == "__main__":
    main()
