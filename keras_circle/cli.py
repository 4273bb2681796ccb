"""The `keras-circle` command line: one small function per subcommand.

Each subcommand is an `_add_<name>(subparsers)` function that registers its
parser and sets `func` to the function that runs it; `SUBCOMMANDS` lists
them, so adding `train` or `evaluate` means adding one function and one
entry. `export` lives in `cli_export`, `index` and `search` in
`cli_search` (public `add_<name>` there). Heavy imports (TensorFlow,
tf2onnx) happen inside the runners, so `keras-circle --help` stays fast.
"""

import argparse
import pathlib
import sys

from keras_circle import cli_export
from keras_circle import cli_options as options
from keras_circle import cli_search


def _add_train(subparsers):
    parser = options.add_subcommand(
        subparsers,
        "train",
        _run_train,
        help="Train, evaluate and export one run from a config file.",
        description="Runs train_and_evaluate: trains (resuming from WORKDIR's "
        "last backup), evaluates with the task's protocol, writes report.json, "
        "plots, and exports the embedder. A finished run in WORKDIR is not "
        "redone; a larger train.epochs trains it longer; any other config "
        "change is refused (see --overwrite). A run whose loss diverges stops "
        "with exit status 1 and exports nothing.",
    )
    options.add_run_arguments(parser, "A .json or .toml config (see configs/).")
    options.add_overwrite(
        parser,
        "Start over: remove WORKDIR's earlier run (its published export/ "
        "versions stay).",
    )
    options.add_quiet(parser)
    options.add_allow_shape_change(
        parser, "WORKDIR/export/saved_model (checked before training)"
    )


def _add_evaluate(subparsers):
    parser = options.add_subcommand(
        subparsers,
        "evaluate",
        _run_evaluate,
        help="Evaluate a finished run's model.keras again.",
        description="Evaluates WORKDIR/model.keras with the run's protocol and "
        "writes WORKDIR/evaluation/report.json (the training report stays). "
        "The config must be the run's: only eval.* (and data folders) may "
        "differ.",
    )
    options.add_run_arguments(parser, "The run's config file.")
    options.add_quiet(parser)


def _add_demo(subparsers):
    parser = options.add_subcommand(
        subparsers,
        "demo",
        _run_demo,
        help="Offline demo: Fashion-MNIST (default) or zero-shot glyphs.",
        description="--dataset fashion_mnist (default): runs the demo config "
        "(keras_circle.demo.CONFIG) on the packaged Fashion-MNIST subset "
        "through the same pipeline as train, then adds the raw-pixel "
        "baseline. WORKDIR is a run folder: a finished demo is not redone, "
        "another --steps-per-epoch is refused (see --overwrite). "
        "--dataset glyphs: trains Circle loss on the glyph benchmark's "
        "training characters and retrieves unseen ones (MAP@R, Recall@K, "
        "cross-typeface Recall@K against raw pixels, a PNG grid of "
        "neighbours from other typefaces); builds the glyph cache on first "
        "use, or names the Debian font packages to install; about 3 minutes "
        "on 2 CPU cores.",
    )
    parser.add_argument(
        "--dataset", choices=["fashion_mnist", "glyphs"], default="fashion_mnist"
    )
    parser.add_argument(
        "--workdir",
        help="Output folder (keras_circle_demo; keras_circle_glyph_demo for "
        "--dataset glyphs).",
    )
    parser.add_argument("--epochs", type=int, help="Epochs (6; fashion_mnist).")
    parser.add_argument(
        "--steps-per-epoch",
        type=int,
        help="10 x 10 batches per epoch (80; fashion_mnist).",
    )
    parser.add_argument(
        "--steps", type=int, help="32 x 4 training batches (400; glyphs)."
    )
    parser.add_argument(
        "--glyph-set",
        choices=["cjk", "tiny"],
        help="cjk (default), or tiny: matplotlib's Latin/Greek/Cyrillic fonts, "
        "a quick check that needs no font package (glyphs).",
    )
    parser.add_argument(
        "--cache-dir",
        help="Glyph cache folder (~/.cache/keras_circle/glyphs; glyphs).",
    )
    options.add_overwrite(
        parser,
        "Start over: remove WORKDIR's run (fashion_mnist); write into a "
        "non-empty WORKDIR that holds no glyph demo (glyphs).",
    )
    options.add_quiet(parser)


def _load(args, command):
    from keras_circle import config

    overrides = list(args.overrides)
    if getattr(args, "quiet", False):
        overrides.append("train.verbose=0")
    try:
        return config.load_config(args.config, overrides)
    except (OSError, config.ConfigError) as error:
        print(f"keras-circle {command}: error: {error}", file=sys.stderr)
        return None


def _print_summary(report):
    metrics = {k: v for k, v in report["metrics"].items() if not isinstance(v, dict)}
    for key, value in report["metrics"].items():
        if isinstance(value, dict):
            metrics.update({f"{key}[{k}]": v for k, v in value.items()})
    for key, value in metrics.items():
        if isinstance(value, int) and not isinstance(value, bool):
            print(f"{key:>24}: {value}")  # a count, such as num_valid_queries
        elif isinstance(value, float):
            print(f"{key:>24}: {value:.4f}")
    for key, value in report["artifacts"].items():
        print(f"{key:>24}: {value}")


def _run_pipeline(command, run):
    """`(run(), 0)`, or `(None, exit status)` with the error printed.

    2: the config or the run folder is refused (nothing was touched); 1: the
    run diverged (nothing from the diverged round was saved or exported).
    """
    from keras_circle import training
    from keras_circle.config import ConfigError
    from keras_circle.pipeline.run_folder import RunFolderError

    try:
        return run(), 0
    except (ConfigError, RunFolderError) as error:
        print(f"keras-circle {command}: error: {error}", file=sys.stderr)
        return None, 2
    except training.TrainingDivergedError as error:
        print(
            f"keras-circle {command}: error: {error} Nothing was saved or "
            "exported from the diverged round; to change the config, start "
            "over with --overwrite.",
            file=sys.stderr,
        )
        return None, 1


def _run_train(args):
    config = _load(args, "train")
    if config is None:
        return 2
    from keras_circle import tasks

    report, status = _run_pipeline(
        "train",
        lambda: tasks.train_and_evaluate(
            config,
            args.workdir,
            overwrite=args.overwrite,
            allow_shape_change=args.allow_shape_change,
        ),
    )
    if status:
        return status
    print(f"{report['steps']} steps in {report['seconds']['total']:.0f} s")
    _print_summary(report)
    return 0


def _run_evaluate(args):
    config = _load(args, "evaluate")
    if config is None:
        return 2
    from keras_circle import tasks

    report, status = _run_pipeline(
        "evaluate", lambda: tasks.evaluate(config, args.workdir)
    )
    if status:
        return status
    _print_summary(report)
    print(
        f"{'report':>24}: {pathlib.Path(args.workdir) / 'evaluation' / 'report.json'}"
    )
    return 0


_DEMO_OPTIONS = {
    "fashion_mnist": ("epochs", "steps_per_epoch"),
    "glyphs": ("steps", "glyph_set", "cache_dir"),
}


def _demo_error(message):
    print(f"keras-circle demo: error: {message}", file=sys.stderr)
    return 2


def _run_demo(args):
    for dataset, names in _DEMO_OPTIONS.items():
        for name in names:
            if dataset != args.dataset and getattr(args, name) is not None:
                flag = "--" + name.replace("_", "-")
                return _demo_error(f"{flag} applies to --dataset {dataset} only.")
    for name in ("epochs", "steps_per_epoch", "steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            flag = "--" + name.replace("_", "-")
            return _demo_error(f"{flag} must be >= 1; got {value}.")
    if args.dataset == "glyphs":
        return _run_glyph_demo(args)
    from keras_circle import demo

    workdir = args.workdir or "keras_circle_demo"
    report, status = _run_pipeline(
        "demo",
        lambda: demo.run_demo(
            workdir,
            epochs=args.epochs or 6,
            steps_per_epoch=args.steps_per_epoch or 80,
            verbose=0 if args.quiet else 1,
            overwrite=args.overwrite,
        ),
    )
    if not status and args.quiet:
        # Quiet drops the progress, not the result.
        print(demo.summary(report, pathlib.Path(workdir) / "report.json"))
    return status


def _run_glyph_demo(args):
    from keras_circle import glyph_demo
    from keras_circle.data import GlyphCacheError
    from keras_circle.data.glyph_fonts import MissingFontsError

    options = {"glyph_set": args.glyph_set or "cjk", "cache_dir": args.cache_dir}
    if args.steps is not None:
        options["steps"] = args.steps
    workdir = args.workdir or "keras_circle_glyph_demo"
    try:
        report, status = _run_pipeline(
            "demo",
            lambda: glyph_demo.run_glyph_demo(
                workdir,
                verbose=0 if args.quiet else 1,
                overwrite=args.overwrite,
                **options,
            ),
        )
    except (MissingFontsError, GlyphCacheError) as error:
        return _demo_error(str(error))
    if not status and args.quiet:
        # Quiet drops the progress, not the result.
        path = pathlib.Path(workdir) / "report.json"
        print(glyph_demo.summary(report, path))
    return status


SUBCOMMANDS = [_add_train, _add_evaluate, cli_export.add_export, _add_demo]
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
    # `keras_circle.console.quiet_cli_start` reads `--verbose` off the raw
    # command line before this parser runs; every subcommand accepts it.
    for subparser in subparsers.choices.values():
        options.add_verbose(subparser)
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
