"""``n2nonnx connectivity``: heat-diffusion connectivity of models against a reference."""

from __future__ import annotations

import argparse

from n2nonnx.cli import options

DESCRIPTION = """\
Build the unit graph of a reference and of each model (one node per input channel and per
neuron / channel, an edge where a non-zero weight joins two units), diffuse heat from the
inputs and print delta(t) = ||S_ref(t) - S(t)||_2, delta at saturation, connected
components, dead units and the spectral gap. With --dense-reference every file is a model
and the reference is the first one with masks and N2NSkip layers removed."""

EXAMPLE = """\
examples:
  n2nonnx connectivity dense.onnx pruned.onnx skip.onnx --plot fig.png --json report.json
  n2nonnx connectivity --dense-reference pruned.onnx"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``connectivity`` verb."""
    parser = options.add_verb(
        subparsers,
        "connectivity",
        "compare models' connectivity by heat diffusion",
        DESCRIPTION,
        EXAMPLE,
    )
    parser.add_argument(
        "input", metavar="REFERENCE.onnx", help="the reference (e.g. the dense model)"
    )
    parser.add_argument(
        "models", nargs="*", metavar="MODEL.onnx", help="models to compare with the reference"
    )
    parser.add_argument(
        "--dense-reference",
        action="store_true",
        help="treat every file as a model; reference = the first one's dense version",
    )
    parser.add_argument(
        "--times",
        type=float,
        nargs="+",
        metavar="T",
        help="diffusion times (default: 20 log-spaced from 0.03 to 30 over the "
        "reference's mean degree)",
    )
    parser.add_argument(
        "--weighted", action="store_true", help="edge weight sum |w| over the kernel instead of 1"
    )
    parser.add_argument(
        "--no-spectrum",
        action="store_true",
        help="skip eigenvalues (spectral gap, scree): faster on large graphs",
    )
    parser.add_argument(
        "--plot",
        metavar="FILE",
        help="write adjacency / delta(t) / scree figures (.png, .svg, .pdf)",
    )
    parser.add_argument("--json", metavar="FILE.json", help="write the full report as JSON")
    options.add_force(parser)
    options.add_input_shape(parser)
    options.add_progress(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Analyse, print the table, write the requested files."""
    import json
    import os
    from pathlib import Path

    from n2nonnx.errors import InvalidArgumentError
    from n2nonnx.paths import check_output_file, write_text_atomic

    files = [args.input, *args.models]
    if args.dense_reference:
        reference_file, model_files = None, files
    elif not args.models:
        raise InvalidArgumentError(
            "give a reference and at least one model (n2nonnx connectivity ref.onnx model.onnx), "
            "or --dense-reference model.onnx"
        )
    else:
        reference_file, model_files = args.input, args.models
    if args.json:
        check_output_file(
            args.json, label="--json", force=args.force, inputs=files, suffixes=(".json",)
        )
    if args.plot:
        check_output_file(
            args.plot,
            label="--plot",
            force=args.force,
            inputs=files + [args.json],
            suffixes=(".png", ".svg", ".pdf"),
        )
    if args.times is not None and any(not (0 < t < 1e12) for t in args.times):
        raise InvalidArgumentError(f"--times must be positive and below 1e12, got {args.times}")

    from n2nonnx.connectivity import analyze
    from n2nonnx.io import load

    shapes = options.parse_input_shapes(args.input_shape)
    reference = None if reference_file is None else load(reference_file, shapes)
    models = [load(path, shapes) for path in model_files]
    report = analyze(
        reference, *models, times=args.times, weighted=args.weighted, spectrum=not args.no_spectrum
    )
    print(report.table())
    staged = None
    try:  # both files or neither: the figure is drawn beside its destination, renamed last
        if args.plot:
            from n2nonnx.connectivity.plots import plot_report

            plot = Path(args.plot)
            staged = plot.with_name(f".{plot.stem}.{os.getpid()}.tmp{plot.suffix}")
            plot_report(report, staged)
        if args.json:
            write_text_atomic(args.json, json.dumps(report.to_dict(), indent=1))
        if staged is not None:
            os.replace(staged, args.plot)
            staged = None
    finally:
        if staged is not None:
            staged.unlink(missing_ok=True)
    if args.plot:
        print(f"figures written to {args.plot}")
    if args.json:
        print(f"report written to {args.json}")
    return 0
