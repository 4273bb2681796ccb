"""The `keras-circle` command line: one small function per subcommand.

Each subcommand is an `_add_<name>(subparsers)` function that registers its
parser and sets `func` to the function that runs it; `SUBCOMMANDS` lists
them, so adding `train` or `evaluate` means adding one function and one
entry. Heavy imports (TensorFlow, tf2onnx) happen inside the runners, so
`keras-circle --help` stays fast.
"""

import argparse
import pathlib
import sys

from keras_circle import cli_search

# data/conventions.py's NORMALIZATIONS, spelled out: importing keras_circle.data
# would import TensorFlow and slow down `keras-circle --help` (a test keeps
# the two lists equal).
NORMALIZATIONS = ("zero_one", "symmetric", "imagenet", "caffe", "none")


def _add_export(subparsers):
    parser = subparsers.add_parser(
        "export",
        help="Export a trained model's embedder to a TF Serving SavedModel "
        "and/or ONNX.",
        description="Keeps the embedder of a .keras model (the input of a final "
        "CosineProxies head, or the model's output), adds L2 normalisation, "
        "verifies against Keras and publishes atomically. Runs under the "
        "TensorFlow backend whatever KERAS_BACKEND says (in a subprocess).",
    )
    parser.add_argument("model", help="Path of the trained .keras model.")
    parser.add_argument(
        "--base-dir",
        help="TF Serving model base directory; the SavedModel goes to "
        "BASE_DIR/<version>/.",
    )
    parser.add_argument(
        "--version",
        type=int,
        default=None,
        help="Version, 1 to 2**63-1 (default: the next free integer).",
    )
    parser.add_argument("--onnx", help="Also (or only) write this ONNX file.")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset, 13-18 (17).")
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
        "--normalization",
        choices=NORMALIZATIONS,
        default=None,
        help="Pixel normalization the model was trained with (default: detected "
        "from the model: none if it rescales its own input, else zero_one).",
    )
    parser.add_argument(
        "--scale",
        choices=["zero_one", "minus_one_to_one", "none"],
        default=None,
        help="Deprecated: use --normalization (minus_one_to_one is symmetric).",
    )
    parser.add_argument(
        "--center-crop",
        type=int,
        metavar="SHORTER_SIDE",
        help="In the bytes signature, resize the shorter side to SHORTER_SIDE "
        "and crop the centre to the model size (as fine-grained evaluation "
        "does) instead of resizing the whole image.",
    )
    parser.add_argument(
        "--gallery",
        metavar="INDEX_DIR",
        help="A saved index of this model's embeddings (`keras-circle index`): "
        "adds the serving_search signature (and ONNX search outputs), an exact "
        "top-k against the gallery stored in the export.",
    )
    parser.add_argument(
        "--top-k",
        type=int,
        metavar="K",
        help="Neighbours serving_search returns (10), with --gallery.",
    )
    parser.add_argument(
        "--atol", type=float, default=1e-5, help="Verification tolerance (1e-5)."
    )
    parser.add_argument(
        "--allow-shape-change",
        action="store_true",
        help="Publish even if the input shape or embedding size differs from "
        "the latest version in BASE_DIR.",
    )
    parser.add_argument("--no-progress", action="store_true", help="No progress bar.")
    parser.set_defaults(func=_run_export)


def _export_argv(args):
    """The `export` command line that parses back to `args`."""
    import os

    model = args.model
    if model.startswith("-"):
        model = os.path.join(os.curdir, model)
    argv = ["export", model, f"--opset={args.opset}", f"--atol={args.atol!r}"]
    flags = ("base_dir", "version", "onnx", "embedding_layer", "normalization")
    flags += ("scale", "center_crop", "gallery", "top_k")
    for flag in flags:
        if getattr(args, flag) is not None:
            argv.append(f"--{flag.replace('_', '-')}={getattr(args, flag)}")
    if args.size:
        argv += ["--size", *map(str, args.size)]
    for flag in ("allow_shape_change", "no_progress"):
        if getattr(args, flag):
            argv.append(f"--{flag.replace('_', '-')}")
    return argv


class _UsageError(ValueError):
    """A flag combination the export command does not take (exit status 2)."""


def _export_preprocessing(args):
    """The preprocessing changes the flags ask for (a partial spec)."""
    import os

    preprocessing = {}
    if args.size:
        preprocessing["size"] = list(args.size)
    if args.scale:
        if args.normalization:
            raise _UsageError("give --normalization only (--scale is its old name).")
        new = "symmetric" if args.scale == "minus_one_to_one" else args.scale
        if not os.environ.get("KERAS_CIRCLE_EXPORT_REEXEC"):  # said once
            print(
                f"keras-circle export: note: --scale is deprecated; use "
                f"--normalization {new}.",
                file=sys.stderr,
            )
        preprocessing["normalization"] = new
    if args.normalization:
        preprocessing["normalization"] = args.normalization
    if args.center_crop is not None:
        if args.center_crop < 1:
            raise _UsageError(
                f"--center-crop must be a positive side length; got {args.center_crop}."
            )
        preprocessing["resize"] = "resize_shorter_then_center_crop"
        preprocessing["shorter_side"] = args.center_crop
    if args.top_k is not None and args.gallery is None:
        raise _UsageError("--top-k needs --gallery.")
    if args.top_k is not None and args.top_k < 1:
        raise _UsageError(f"--top-k must be >= 1; got {args.top_k}.")
    return preprocessing


def _export_gallery(args, preprocessing):
    """`(index, preprocessing)` for `--gallery`, checked against the model.

    The index must hold this model's embeddings (its recorded embedder is the
    model's fingerprint). An index written by `keras-circle index` also
    records the preprocessing its images got; the export uses it, so the
    served bytes signature embeds images as the gallery's were, and flags
    that contradict it are refused.
    """
    if args.gallery is None:
        return None
    import json
    import os

    from keras_circle import export
    from keras_circle.data import check_spec
    from keras_circle.search import EmbeddingIndex

    index = EmbeddingIndex.load(args.gallery)
    fingerprint = export.model_fingerprint(args.model, args.embedding_layer)
    if index.embedder != export.fingerprint_id(fingerprint):
        built = "no embedder recorded"
        if index.embedder is not None:
            sha = json.loads(index.embedder).get("weights_sha256", "?")
            built = f"weights sha256 {sha[:12]}..."
        raise ValueError(
            f"--gallery {args.gallery!r} was not built with MODEL {args.model!r} "
            f"(weights sha256 {fingerprint['weights_sha256'][:12]}...; the index: "
            f"{built}): its embeddings are not comparable with this model's. "
            "Build it with `keras-circle index MODEL DATA --out DIR`."
        )
    sidecar = os.path.join(args.gallery, cli_search.SIDECAR)
    if os.path.isfile(sidecar):
        with open(sidecar, encoding="utf-8") as f:
            indexed = json.load(f)["preprocessing"]
        wanted = check_spec(preprocessing, default=indexed)
        if wanted != check_spec(indexed):
            # The keys a user sets (mean, std and bgr follow normalization).
            keys = ("size", "channels", "resize", "shorter_side", "normalization")
            differ = [k for k in keys if wanted.get(k) != indexed.get(k)]
            raise ValueError(
                f"--gallery {args.gallery!r} was indexed with preprocessing "
                f"{ {k: indexed.get(k) for k in differ} }; the flags ask for "
                f"{ {k: wanted[k] for k in differ} }. Export with the index's "
                "preprocessing (drop those flags) or rebuild the index."
            )
        preprocessing = wanted
    return index, preprocessing


def _run_export(args):
    if not args.base_dir and not args.onnx:
        print("keras-circle export: give --base-dir and/or --onnx.", file=sys.stderr)
        return 2
    import os
    import subprocess

    try:
        preprocessing = _export_preprocessing(args)
    except _UsageError as error:
        print(f"keras-circle export: error: {error}", file=sys.stderr)
        return 2

    import keras

    backend = keras.backend.backend()
    if backend != "tensorflow":
        # The backend is fixed when keras is imported: export (TensorFlow
        # work) runs in a fresh process that imports it under TensorFlow.
        if os.environ.get("KERAS_CIRCLE_EXPORT_REEXEC"):
            print(
                f"keras-circle export: error: Keras still runs on {backend!r} "
                "with KERAS_BACKEND=tensorflow; is TensorFlow installed?",
                file=sys.stderr,
            )
            return 1
        print(
            f"keras-circle export: Keras backend is {backend!r}; exporting in a "
            "TensorFlow subprocess.",
            file=sys.stderr,
        )
        env = {
            **os.environ,
            "KERAS_BACKEND": "tensorflow",
            "KERAS_CIRCLE_EXPORT_REEXEC": "1",
        }
        command = [sys.executable, "-m", "keras_circle", *_export_argv(args)]
        return subprocess.run(command, env=env, check=False).returncode
    from keras_circle import export

    try:
        gallery = _export_gallery(args, preprocessing)
    except (OSError, ValueError) as error:
        print(f"keras-circle export: error: {error}", file=sys.stderr)
        return 1
    if gallery is not None:
        gallery, preprocessing = gallery
    options = dict(
        embedding_layer=args.embedding_layer,
        preprocessing=preprocessing or None,
        atol=args.atol,
        progress=not args.no_progress,
    )
    if gallery is not None:
        options.update(gallery=gallery, top_k=args.top_k or 10)
    try:
        if args.base_dir:
            path = export.export_saved_model(
                args.model,
                args.base_dir,
                args.version,
                allow_shape_change=args.allow_shape_change,
                **options,
            )
            print(f"SavedModel: {path}")
        if args.onnx:
            path = export.export_onnx(args.model, args.onnx, args.opset, **options)
            print(f"ONNX: {path}")
    except (OSError, TypeError, ValueError, export.ExportVerificationError) as error:
        print(f"keras-circle export: error: {error}", file=sys.stderr)
        return 1
    return 0


def _add_train(subparsers):
    parser = subparsers.add_parser(
        "train",
        help="Train, evaluate and export one run from a config file.",
        description="Runs train_and_evaluate: trains (resuming from WORKDIR's "
        "last backup), evaluates with the task's protocol, writes report.json, "
        "plots, and exports the embedder. A finished run in WORKDIR is not "
        "redone; a larger train.epochs trains it longer; any other config "
        "change is refused (see --overwrite). A run whose loss diverges stops "
        "with exit status 1 and exports nothing.",
    )
    parser.add_argument("config", help="A .json or .toml config (see configs/).")
    parser.add_argument("--workdir", default="runs/default", help="Run folder.")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Override a config key, e.g. --set train.epochs=3 (repeatable).",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="Start over: remove WORKDIR's earlier run (its published export/ "
        "versions stay).",
    )
    parser.set_defaults(func=_run_train)


def _add_evaluate(subparsers):
    parser = subparsers.add_parser(
        "evaluate",
        help="Evaluate a finished run's model.keras again.",
        description="Evaluates WORKDIR/model.keras with the run's protocol and "
        "writes WORKDIR/evaluation/report.json (the training report stays). "
        "The config must be the run's: only eval.* (and data folders) may "
        "differ.",
    )
    parser.add_argument("config", help="The run's config file.")
    parser.add_argument("--workdir", default="runs/default", help="Run folder.")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE"
    )
    parser.set_defaults(func=_run_evaluate)


def _add_demo(subparsers):
    parser = subparsers.add_parser(
        "demo",
        help="Offline demo on the packaged Fashion-MNIST subset (a few minutes).",
    )
    parser.add_argument("--workdir", default="keras_circle_demo", help="Output folder.")
    parser.add_argument("--epochs", type=int, default=6, help="Epochs (6).")
    parser.add_argument(
        "--steps-per-epoch", type=int, default=80, help="10 x 10 batches per epoch."
    )
    parser.set_defaults(func=_run_demo)


def _load(args, command):
    from keras_circle import config

    try:
        return config.load_config(args.config, args.overrides)
    except (OSError, config.ConfigError) as error:
        print(f"keras-circle {command}: error: {error}", file=sys.stderr)
        return None


def _print_summary(report):
    metrics = {k: v for k, v in report["metrics"].items() if not isinstance(v, dict)}
    for key, value in report["metrics"].items():
        if isinstance(value, dict):
            metrics.update({f"{key}[{k}]": v for k, v in value.items()})
    for key, value in metrics.items():
        if isinstance(value, (int, float)):
            print(f"{key:>24}: {value:.4f}")
    for key, value in report["artifacts"].items():
        print(f"{key:>24}: {value}")


def _run_train(args):
    config = _load(args, "train")
    if config is None:
        return 2
    from keras_circle import pipeline
    from keras_circle import training
    from keras_circle.config import ConfigError
    from keras_circle.pipeline.run_folder import RunFolderError

    try:
        report = pipeline.train_and_evaluate(
            config, args.workdir, overwrite=args.overwrite
        )
    except (ConfigError, RunFolderError) as error:
        print(f"keras-circle train: error: {error}", file=sys.stderr)
        return 2
    except training.TrainingDivergedError as error:
        print(
            f"keras-circle train: error: {error} Nothing was saved or exported "
            "from the diverged round; to change the config, start over with "
            "--overwrite.",
            file=sys.stderr,
        )
        return 1
    print(f"{report['steps']} steps in {report['seconds']['total']:.0f} s")
    _print_summary(report)
    return 0


def _run_evaluate(args):
    config = _load(args, "evaluate")
    if config is None:
        return 2
    from keras_circle import pipeline
    from keras_circle.config import ConfigError
    from keras_circle.pipeline.run_folder import RunFolderError

    try:
        report = pipeline.evaluate(config, args.workdir)
    except (ConfigError, RunFolderError) as error:
        print(f"keras-circle evaluate: error: {error}", file=sys.stderr)
        return 2
    _print_summary(report)
    print(
        f"{'report':>24}: {pathlib.Path(args.workdir) / 'evaluation' / 'report.json'}"
    )
    return 0


def _run_demo(args):
    for flag, value in (
        ("--epochs", args.epochs),
        ("--steps-per-epoch", args.steps_per_epoch),
    ):
        if value < 1:
            print(
                f"keras-circle demo: error: {flag} must be >= 1; got {value}.",
                file=sys.stderr,
            )
            return 2
    from keras_circle import demo

    demo.run_demo(
        args.workdir, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch
    )
    return 0


SUBCOMMANDS = [_add_train, _add_evaluate, _add_export, _add_demo]
SUBCOMMANDS += [cli_search.add_index, cli_search.add_search]


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
