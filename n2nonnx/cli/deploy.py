"""``n2nonnx deploy``: fold masks, remove dead units, store compactly, optionally int8 / int4, for a target; verified."""

from __future__ import annotations

import argparse

from n2nonnx.cli import options

# n2nonnx.deployment.targets.TARGET_NAMES, spelled out: importing it would load numpy and
# onnx for --help (tests/test_deploy_targets.py keeps the two equal)
TARGET_NAMES = ("onnxruntime", "ort-mobile", "tensorrt", "mnn")

DESCRIPTION = """\
Fold the masks into the weights, remove dead units exactly, store sparse weights as
values + uint8 index gaps that onnxruntime expands once at load (--storage compact),
optionally quantize (static int8 with uint8 activations, or 4-bit MatMul weights), and
check the result against INPUT in onnxruntime before anything is written. --target picks
the runtime and the file format (-o must end with it): onnxruntime (.onnx), ort-mobile
(.ort and its required-operators config), tensorrt (.onnx with 2:4-sparse weights) or
mnn (.mnn, needs pip install 'n2nonnx[edge]'); those are verified in their runtime too."""

EXAMPLE = """\
examples:
  n2nonnx deploy model.onnx -o deployed.onnx
  n2nonnx deploy model.onnx -o deployed.onnx --weights-fp16
  n2nonnx deploy model.onnx -o int8.onnx --quantize int8 --data mnist1d
  n2nonnx deploy model.onnx -o int4.onnx --quantize int4
  n2nonnx deploy model.onnx -o model.ort --target ort-mobile
  n2nonnx deploy model.onnx -o model.mnn --target mnn"""


def register(subparsers) -> None:
    """Add the ``deploy`` verb."""
    parser = options.add_verb(
        subparsers,
        "deploy",
        "fold masks, remove dead units, store compactly, int8 / int4, targets; verified",
        DESCRIPTION,
        EXAMPLE,
    )
    options.add_input(parser)
    options.add_output(
        parser, help="where to write the deployed model (ending as --target's format)"
    )
    options.add_input_shape(parser)
    parser.add_argument(
        "--storage",
        default="compact",
        choices=("compact", "dense"),
        help="compact: values + uint8 index gaps, expanded by onnxruntime once at load",
    )
    parser.add_argument(
        "--weights-fp16", action="store_true", help="store the compacted values in half precision"
    )
    parser.add_argument(
        "--quantize",
        choices=("none", "int8", "int4"),
        default="none",
        help="int8: static QDQ, uint8 activations, calibrated on --data; int4: 4-bit "
        "MatMul / Gemm weights (onnxruntime's MatMulNBits)",
    )
    parser.add_argument(
        "--keep-fp32",
        nargs="+",
        default=[],
        metavar="LAYER",
        help="int8 / int4: layer nodes to keep in fp32 (checked in onnxruntime's optimised model)",
    )
    parser.add_argument(
        "--target",
        choices=TARGET_NAMES,
        default="onnxruntime",
        help="the runtime deployed for; sets the output format (default onnxruntime)",
    )
    options.add_data(parser)
    parser.add_argument(
        "--providers",
        nargs="+",
        metavar="PROVIDER",
        help="onnxruntime execution providers for verification, e.g. CUDAExecutionProvider",
    )
    parser.add_argument(
        "--samples",
        type=options.positive_int,
        default=256,
        metavar="N",
        help="inputs compared in verification",
    )
    parser.add_argument(
        "--rtol", type=float, help="relative tolerance of the verification (default by mode)"
    )
    parser.add_argument(
        "--min-agreement", type=float, help="least top-1 agreement accepted (fp16 / int8)"
    )
    parser.add_argument(
        "--no-fallback", action="store_true", help="int8: do not keep slower int8 layers in fp32"
    )
    parser.add_argument(
        "--ort-threads",
        type=options.positive_int,
        default=1,
        metavar="N",
        help="onnxruntime threads for int8 timing",
    )
    parser.add_argument(
        "--align",
        type=options.non_negative_int,
        default=16,
        metavar="N",
        help="keep some dead units so kept widths are multiples of N, for onnxruntime's "
        "blocked conv kernels (default 16; 0: off)",
    )
    parser.add_argument(
        "--pad-to-align",
        action="store_true",
        help="also time zero-padding layers so convolutions read multiples of --align channels "
        "(exact; for models pruned elsewhere)",
    )
    parser.add_argument(
        "--no-timing",
        action="store_true",
        help="do not time no / exact / aligned unit removal in onnxruntime (keep aligned)",
    )
    options.add_seed(parser, help="seed of random verification inputs")
    parser.add_argument("--json", metavar="FILE", help="also write the summary as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Deploy ``args.input``, verify it, and write ``args.output`` (and ``--json``)."""
    import json

    from n2nonnx.deployment import deploy
    from n2nonnx.deployment.targets import check_output_suffix, get_target, output_paths
    from n2nonnx.io import load
    from n2nonnx.paths import check_output_file, write_text_atomic

    quantize = None if args.quantize in (None, "none") else args.quantize
    target = get_target(args.target)
    check_output_suffix(target, args.output)
    target.check(quantize)
    check_output_file(
        args.output, label="-o", force=args.force, inputs=[args.input], suffixes=(target.suffix,)
    )
    beside = output_paths(args.output, ["", *target.companions])
    for suffix in target.companions:
        check_output_file(
            beside[suffix], label=f"-o (its {suffix})", force=args.force, inputs=[args.input]
        )
    if args.json:
        check_output_file(
            args.json, label="--json", force=args.force, inputs=[args.input], suffixes=(".json",)
        )
    model = load(args.input, options.parse_input_shapes(args.input_shape))
    result = deploy(
        model,
        storage=args.storage,
        weights_fp16=args.weights_fp16,
        quantize=quantize,
        data=args.data,
        providers=args.providers,
        seed=args.seed,
        samples=args.samples,
        rtol=args.rtol,
        min_agreement=args.min_agreement,
        fallback=not args.no_fallback,
        threads=args.ort_threads,
        align=args.align,
        timing=not args.no_timing,
        pad_to_align=args.pad_to_align,
        keep_fp32=args.keep_fp32,
        target=args.target,
    )
    path = result.save(args.output)
    print(result.format())
    if args.json:
        write_text_atomic(args.json, json.dumps(result.summary, indent=2, default=float))
    print(f"\nwrote {path}" + "".join(f" and {beside[suffix]}" for suffix in target.companions))
    return 0
