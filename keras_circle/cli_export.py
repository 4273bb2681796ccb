"""`keras-circle export`: a trained model's embedder to a SavedModel and/or ONNX.

The flags name the test-time preprocessing spec of `keras_circle.data`
(`--normalization`, `--center-crop`, `--size`; `--scale` is the old name of
`--normalization`), and `--gallery INDEX_DIR` adds the search signature from
a saved `keras-circle index` folder. Export is TensorFlow work: under another
Keras backend the command re-runs itself in a TensorFlow subprocess. Heavy
imports happen in the runner, so `keras-circle --help` stays fast.
"""

import sys

from keras_circle import cli_options as options
from keras_circle import cli_search


def add_export(subparsers):
    parser = options.add_subcommand(
        subparsers,
        "export",
        run_export,
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
    options.add_preprocessing_flags(
        parser,
        "Pixel normalization the model was trained with (default: detected "
        "from the model: none if it rescales its own input, else zero_one).",
        "In the bytes signature, resize the shorter side to SHORTER_SIDE "
        "and crop the centre to the model size (as fine-grained evaluation "
        "does) instead of resizing the whole image.",
    )
    parser.add_argument(
        "--scale",
        choices=["zero_one", "minus_one_to_one", "none"],
        default=None,
        help="Deprecated: use --normalization (minus_one_to_one is symmetric).",
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
    options.add_allow_shape_change(parser, "BASE_DIR")
    options.add_no_progress(parser)


def export_argv(args):
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
    try:
        preprocessing.update(
            options.preprocessing_flags(args.normalization, args.center_crop)
        )
    except ValueError as error:
        raise _UsageError(str(error)) from None
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


def run_export(args):
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
        command = [sys.executable, "-m", "keras_circle", *export_argv(args)]
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
