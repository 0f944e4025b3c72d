"""SNACS vs L1-norm vs random filter pruning on trained CNNs, at equal removed parameters.

Two models are trained first (and kept in --out): a VGG-style 1-D CNN on MNIST-1D and a
ResNet-style 2-D CNN on scikit-learn's 8x8 digits. Each is then pruned structurally at
each prune level (percent of parameters removed) by ``snacs`` (defaults: protect 0.75),
``snacs-p0`` (SNACS without sensitivity protection), ``l1`` and ``random``; every pruned
model gets the same fine-tuning. Reported per cell: test accuracy right after pruning and
after fine-tuning (onnxruntime), parameters and FLOPs kept, onnxruntime latency against
the dense model at batch 1 and 64 (median per call over interleaved rounds, 1 thread), and
the seconds the method took to decide. A level SNACS cannot reach within its limits is
reported as such. Each finished cell is written to ``--out/cells/<model>/<cell>.json``
and skipped when the script runs again.

    python examples/snacs_comparison.py --out snacs_out          # full size (~20 min, 1 thread)
    python examples/snacs_comparison.py --quick --out /tmp/q     # seconds (the tests run this)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
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
from n2nonnx.deployment.timing import interleaved_medians  # noqa: E402
from n2nonnx.errors import InvalidArgumentError  # noqa: E402
from n2nonnx.runtime import accuracy, make_session  # noqa: E402
from n2nonnx.structured import prune_structured  # noqa: E402

# name -> (zoo factory, options, sample shape, data)
MODELS = {
    "vgg": ("vgg1d", {"widths": (32, 32, 64, 64)}, (1, 40), "mnist1d"),
    "resnet": ("resnet", {"in_channels": 1, "widths": (16, 32)}, (1, 8, 8), "digits"),
}
QUICK = {
    "vgg": ("vgg1d", {"widths": (8, 8, 16, 16)}, (1, 40), "mnist1d"),
    "resnet": ("resnet", {"in_channels": 1, "widths": (8, 16)}, (1, 8, 8), "digits"),
}
METHODS = {
    "snacs": ("snacs", {}),
    "snacs-p0": ("snacs", {"protect": 0.0}),
    "l1": ("l1", {}),
    "random": ("random", {}),
}


def trained_model(name: str, spec, out: Path, epochs: int):
    """The trained dense model of ``name`` (trained once, then read from ``out``)."""
    factory, options, shape, data = spec
    path = out / f"{name}_trained.onnx"
    if not path.exists():
        torch.manual_seed(0)
        export(zoo.build(factory, **options), torch.randn(2, *shape), out / f"{name}_init.onnx")
        result = n2nonnx.train(
            n2nonnx.load(out / f"{name}_init.onnx"), data, epochs=epochs, progress=False
        )
        n2nonnx.save(result.model, path)
    return n2nonnx.load(path)


def test_accuracy(model, dataset) -> float:
    x = dataset.x_test.numpy().astype(np.float32)
    return accuracy(
        make_session(model, ["CPUExecutionProvider"], threads=1), x, dataset.y_test.numpy()
    )


def latency_ratios(dense, pruned, shape, rounds: int) -> dict[str, float]:
    """Median seconds per call of the dense model, and pruned / dense, at batch 1 and 64."""
    sessions = [make_session(m, ["CPUExecutionProvider"], threads=1) for m in (dense, pruned)]
    figures = {}
    for batch in (1, 64):
        x = np.random.default_rng(1).standard_normal((batch, *shape)).astype(np.float32)
        medians = interleaved_medians(
            sessions,
            {sessions[0].get_inputs()[0].name: x},
            rounds=rounds,
            calls=20 if batch == 1 else 5,
        )
        figures[f"dense_ms_b{batch}"] = medians[0] * 1e3
        figures[f"ratio_b{batch}"] = medians[1] / medians[0]
    return figures


def run_cell(model, dataset, spec, method_key: str, level: float, args) -> dict:
    method, extra = METHODS[method_key]
    options = {"samples_per_class": args.samples_per_class, **extra} if method == "snacs" else {}
    cell = {"method": method_key, "prune_percent": level}
    try:
        result = prune_structured(  # exact widths (align=0): the README's table was made so
            model, method, data=dataset, prune_percent=level, seed=0, align=0, **options
        )
    except InvalidArgumentError as error:
        return {**cell, "unreachable": str(error)}
    pruned_accuracy = test_accuracy(result.model, dataset)
    tuned = n2nonnx.train(
        result.model,
        dataset,
        epochs=args.finetune_epochs,
        optimizer="adam",
        lr=1e-3,
        schedule="cosine",
        seed=0,
    ).model
    return {
        **cell,
        "params_kept": result.params_kept,
        "flops_kept": result.flops_kept,
        "decision_s": result.decision_seconds,
        "accuracy_pruned": pruned_accuracy,
        "accuracy_finetuned": test_accuracy(tuned, dataset),
        "removed": {k: len(v) for k, v in result.removed.items()},
        "upper_limits": result.upper_limits,
        **latency_ratios(model, result.model, spec[2], args.rounds),
    }


def table(out: Path, dense_rows: dict) -> str:
    lines = [
        "| model | level | method | params kept | FLOPs kept | acc pruned | acc fine-tuned | "
        "latency b1 | latency b64 | decide s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (dense_accuracy, dense_tuned) in dense_rows.items():
        lines.append(
            f"| {name} | 0% | dense | 1.000 | 1.000 | {dense_accuracy:.3f} | {dense_tuned:.3f} | 1.00x | 1.00x | - |"
        )
        cells = [json.loads(p.read_text()) for p in sorted((out / "cells" / name).glob("*.json"))]
        for cell in sorted(
            cells, key=lambda c: (c["prune_percent"], list(METHODS).index(c["method"]))
        ):
            if "unreachable" in cell:
                lines.append(
                    f"| {name} | {cell['prune_percent']:g}% | {cell['method']} | unreachable "
                    "(limits) | | | | | | |"
                )
                continue
            lines.append(
                f"| {name} | {cell['prune_percent']:g}% | {cell['method']} | {cell['params_kept']:.3f} | "
                f"{cell['flops_kept']:.3f} | {cell['accuracy_pruned']:.3f} | {cell['accuracy_finetuned']:.3f} | "
                f"{cell['ratio_b1']:.2f}x | {cell['ratio_b64']:.2f}x | {cell['decision_s']:.2f} |"
            )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for models and finished cells (resumable)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny models, one level, one epoch")
    parser.add_argument(
        "--levels",
        type=float,
        nargs="+",
        default=[25.0, 40.0, 60.0],
        help="percent of parameters removed (default 25 40 60)",
    )
    parser.add_argument(
        "--train-epochs", type=int, default=20, help="epochs of the dense models (default 20)"
    )
    parser.add_argument(
        "--finetune-epochs",
        type=int,
        default=5,
        help="epochs of the same fine-tuning for every pruned model (Adam 1e-3, cosine; default 5)",
    )
    parser.add_argument(
        "--samples-per-class", type=int, default=250, help="SNACS sample (default 250)"
    )
    parser.add_argument(
        "--rounds", type=int, default=7, help="interleaved latency rounds (default 7)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    models = QUICK if args.quick else MODELS
    if args.quick:
        args.levels, args.train_epochs, args.finetune_epochs = [20.0], 1, 1
        args.samples_per_class, args.rounds = 20, 2
    args.out.mkdir(parents=True, exist_ok=True)
    dense_rows = {}
    for name, spec in models.items():
        model = trained_model(name, spec, args.out, args.train_epochs)
        dataset = resolve_data(spec[3], input_shape=[None, *spec[2]])
        dense_tuned = n2nonnx.train(
            model,
            dataset,
            epochs=args.finetune_epochs,
            optimizer="adam",
            lr=1e-3,
            schedule="cosine",
            seed=0,
        ).model
        dense_rows[name] = (test_accuracy(model, dataset), test_accuracy(dense_tuned, dataset))
        folder = args.out / "cells" / name
        folder.mkdir(parents=True, exist_ok=True)
        for level in args.levels:
            for method_key in METHODS:
                path = folder / f"{method_key}_{level:g}.json"
                if path.exists():
                    continue
                started = time.perf_counter()
                cell = run_cell(model, dataset, spec, method_key, level, args)
                path.write_text(json.dumps(cell, indent=1, sort_keys=True))
                print(
                    f"  {name} {method_key} {level:g}% done in {time.perf_counter() - started:.0f}s",
                    file=sys.stderr,
                    flush=True,
                )
    print(table(args.out, dense_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
