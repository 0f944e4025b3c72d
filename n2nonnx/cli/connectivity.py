"""``n2nonnx connectivity``: heat-diffusion connectivity of models against a reference."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from n2nonnx.cli import add_input_shape_option, parse_input_shapes
from n2nonnx.errors import InvalidArgumentError, SaveError


def register(subparsers) -> None:
    """Add the ``connectivity`` subcommand."""
    parser = subparsers.add_parser(
        "connectivity",
        help="compare models' connectivity by heat diffusion (delta(t), components, dead units)",
        description="Build the unit graph of a reference and of each model (one node per input "
        "channel and per neuron / channel, an edge where a non-zero weight joins two units), "
        "diffuse heat from the inputs and print delta(t) = ||S_ref(t) - S(t)||_2, delta at "
        "saturation, connected components, dead units, spectral gap. With --dense-reference "
        "every file is a model and the reference is the first one with masks and N2NSkip "
        "layers removed.",
    )
    parser.add_argument("reference", help="the reference .onnx (e.g. the dense model)")
    parser.add_argument("models", nargs="*", help="models to compare with the reference")
    parser.add_argument("--dense-reference", action="store_true",
                        help="treat every file as a model; reference = the first one's dense version")
    parser.add_argument("--times", type=float, nargs="+", metavar="T",
                        help="diffusion times (default: 20 log-spaced from 0.03 to 30 over the "
                        "reference's mean degree)")
    parser.add_argument("--weighted", action="store_true",
                        help="edge weight sum |w| over the kernel instead of 1")
    parser.add_argument("--no-spectrum", action="store_true",
                        help="skip eigenvalues (spectral gap, scree): faster on large graphs")
    parser.add_argument("--plot", metavar="FILE",
                        help="write adjacency / delta(t) / scree figures (.png, .svg, .pdf)")
    parser.add_argument("--json", metavar="FILE", help="write the full report as JSON")
    add_input_shape_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Analyse, print the table, write the requested files; returns the exit status."""
    from n2nonnx.connectivity import analyze
    from n2nonnx.io import load

    files = [args.reference, *args.models]
    if args.dense_reference:
        reference_file, model_files = None, files
    else:
        if not args.models:
            raise InvalidArgumentError(
                "give a reference and at least one model (n2nonnx connectivity ref.onnx "
                "model.onnx), or --dense-reference model.onnx"
            )
        reference_file, model_files = args.reference, args.models
    for path in (args.plot, args.json):
        if path and Path(path).resolve() in {Path(f).resolve() for f in files}:
            raise SaveError(f"refusing to overwrite input model {path!r}")
        if path and (not Path(path).resolve().parent.is_dir() or Path(path).is_dir()):
            raise SaveError(f"cannot write {path!r}: its folder does not exist, or it is a folder")
    shapes = parse_input_shapes(args.input_shape)
    reference = None if reference_file is None else load(reference_file, shapes)
    models = [load(path, shapes) for path in model_files]
    report = analyze(reference, *models, times=args.times, weighted=args.weighted,
                     spectrum=not args.no_spectrum)
    print(report.table())
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=1))
        print(f"report written to {args.json}")
    if args.plot:
        from n2nonnx.connectivity.plots import plot_report

        plot_report(report, args.plot)
        print(f"figures written to {args.plot}")
    return 0
