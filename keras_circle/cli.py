"""The `keras-circle` command line: one small function per subcommand.

Each subcommand is an `_add_<name>(subparsers)` function that registers its
parser and sets `func` to the function that runs it; `SUBCOMMANDS` lists
them, so adding `train` or `evaluate` means adding one function and one
entry. Heavy imports (TensorFlow, tf2onnx) happen inside the runners, so
`keras-circle --help` stays fast.
"""

import argparse
import sys


def _add_export(subparsers):
    parser = subparsers.add_parser(
        "export",
        help="Export a trained model's embedder to a TF Serving SavedModel "
        "and/or ONNX.",
        description="Keeps the embedder of a .keras model (the input of a final "
        "CosineProxies head, or the model's output), adds L2 normalisation, "
        "verifies against Keras and publishes atomically.",
    )
    parser.add_argument("model", help="Path of the trained .keras model.")
    parser.add_argument(
        "--base-dir",
        help="TF Serving model base directory; the SavedModel goes to "
        "BASE_DIR/<version>/.",
    )
    parser.add_argument(
        "--version", type=int, default=None, help="Version (default: next integer)."
    )
    parser.add_argument("--onnx", help="Also (or only) write this ONNX file.")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (17).")
    parser.add_argument(
        "--embedding-layer", help="Name of the layer or nested model to export."
    )
    parser.add_argument(
        "--size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="Image size for the bytes signature (default: the model input).",
    )
    parser.add_argument(
        "--scale",
        choices=["zero_one", "minus_one_to_one", "none"],
        default=None,
        help="Pixel scaling the model was trained with (default: zero_one).",
    )
    parser.add_argument(
        "--atol", type=float, default=1e-5, help="Verification tolerance (1e-5)."
    )
    parser.add_argument("--no-progress", action="store_true", help="No progress bar.")
    parser.set_defaults(func=_run_export)


def _run_export(args):
    if not args.base_dir and not args.onnx:
        print("keras-circle export: give --base-dir and/or --onnx.", file=sys.stderr)
        return 2
    from keras_circle import export

    preprocessing = {}
    if args.size:
        preprocessing["size"] = list(args.size)
    if args.scale:
        preprocessing["scale"] = args.scale
    options = dict(
        embedding_layer=args.embedding_layer,
        preprocessing=preprocessing or None,
        atol=args.atol,
        progress=not args.no_progress,
    )
    try:
        if args.base_dir:
            path = export.export_saved_model(
                args.model, args.base_dir, args.version, **options
            )
            print(f"SavedModel: {path}")
        if args.onnx:
            path = export.export_onnx(args.model, args.onnx, args.opset, **options)
            print(f"ONNX: {path}")
    except (OSError, ValueError, export.ExportVerificationError) as error:
        print(f"keras-circle export: error: {error}", file=sys.stderr)
        return 1
    return 0


SUBCOMMANDS = [_add_export]


def build_parser():
    """Returns the `keras-circle` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="keras-circle",
        description="Circle loss and deep metric learning for Keras 3.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv=None):
    """Runs `keras-circle` with `argv` (defaults to `sys.argv[1:]`).

    Args:
        argv: Command-line arguments. Defaults to `None`: `sys.argv[1:]`.

    Returns:
        The exit status (0 on success).

    Example:

    >>> keras_circle.cli.main(["export", "model.keras", "--base-dir", "models/emb"])
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return args.func(args)
