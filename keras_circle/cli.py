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
        help="Offline demo on the packaged Fashion-MNIST subset (a few minutes).",
        description="Runs the demo config (keras_circle.demo.CONFIG) through "
        "the same pipeline as train, then adds the raw-pixel baseline. "
        "WORKDIR is a run folder: a finished demo is not redone, another "
        "--steps-per-epoch is refused (see --overwrite).",
    )
    parser.add_argument("--workdir", default="keras_circle_demo", help="Output folder.")
    parser.add_argument("--epochs", type=int, default=6, help="Epochs (6).")
    parser.add_argument(
        "--steps-per-epoch", type=int, default=80, help="10 x 10 batches per epoch."
    )
    options.add_overwrite(parser)
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

    report, status = _run_pipeline(
        "demo",
        lambda: demo.run_demo(
            args.workdir,
            epochs=args.epochs,
            steps_per_epoch=args.steps_per_epoch,
            verbose=0 if args.quiet else 1,
            overwrite=args.overwrite,
        ),
    )
    if not status and args.quiet:
        # Quiet drops the progress, not the result.
        print(demo.summary(report, pathlib.Path(args.workdir) / "report.json"))
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
