"""The command-line options that several `keras-circle` commands share.

One function per option group, so `train`, `evaluate`, `demo`, `export`,
`index` and the examples' `train.py` spell a shared option, its default and
its reading the same way. Standard library only: `keras-circle --help`
imports this module.
"""

# data/conventions.py's NORMALIZATIONS, spelled out: importing keras_circle.data
# would import TensorFlow and slow down `keras-circle --help` (a test keeps
# the two lists equal).
NORMALIZATIONS = ("zero_one", "symmetric", "imagenet", "caffe", "none")


def add_subcommand(subparsers, name, run, *, help, description):
    """A new subcommand parser whose parsed arguments run `run(args)`."""
    parser = subparsers.add_parser(name, help=help, description=description)
    parser.set_defaults(func=run)
    return parser


def add_run_arguments(parser, config_help, *, config_default=None, workdir=None):
    """`CONFIG`, `--workdir DIR` and repeatable `--set KEY=VALUE`.

    With `config_default`, CONFIG may be left out. `workdir` is the default
    run folder (`runs/default` when `None`).
    """
    if config_default is None:
        parser.add_argument("config", help=config_help)
    else:
        parser.add_argument(
            "config", nargs="?", default=config_default, help=config_help
        )
    parser.add_argument(
        "--workdir", default=workdir or "runs/default", help="Run folder."
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Override a config key, e.g. --set train.epochs=3 (repeatable).",
    )


def add_overwrite(parser, help="Start over: remove WORKDIR's run."):
    parser.add_argument("--overwrite", action="store_true", help=help)


def add_allow_shape_change(parser, where):
    """`--allow-shape-change`; `where` names the published versions compared."""
    parser.add_argument(
        "--allow-shape-change",
        action="store_true",
        help="Publish even if the input shape or embedding size differs from "
        f"the latest version in {where}.",
    )


def add_no_progress(parser):
    parser.add_argument("--no-progress", action="store_true", help="No progress bar.")


def add_preprocessing_flags(parser, normalization_help, center_crop_help):
    """`--normalization NAME` and `--center-crop SHORTER_SIDE` (both optional).

    `preprocessing_flags` reads them into a partial preprocessing spec.
    """
    parser.add_argument(
        "--normalization", choices=NORMALIZATIONS, help=normalization_help
    )
    parser.add_argument(
        "--center-crop", type=int, metavar="SHORTER_SIDE", help=center_crop_help
    )


def preprocessing_flags(normalization, center_crop):
    """The partial preprocessing spec of `--normalization` and `--center-crop`.

    Raises `ValueError` for a non-positive `--center-crop`.
    """
    spec = {}
    if normalization:
        spec["normalization"] = normalization
    if center_crop is not None:
        if center_crop < 1:
            raise ValueError(
                f"--center-crop must be a positive side length; got {center_crop}."
            )
        spec["resize"] = "resize_shorter_then_center_crop"
        spec["shorter_side"] = center_crop
    return spec


def add_quiet(parser):
    """`--quiet`: no progress output (train.verbose=0); summaries still print."""
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="No progress bars or per-epoch lines (train.verbose=0); the "
        "summary at the end still prints.",
    )


def add_verbose(parser):
    """`--verbose`: keep TensorFlow's own start-up logging."""
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="Keep TensorFlow's own logging (its C++ start-up lines and INFO "
        "messages), which keras-circle silences by default.",
    )
