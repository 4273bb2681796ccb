"""TensorFlow-only: one recipe per task family, and the one place that picks it.

Each module (`face_recognition`, `person_reid`, `fine_grained_retrieval`)
reads top to bottom as its family's recipe: data, model, loss, protocol,
ending in a `RECIPE` (`keras_circle.pipeline.Recipe`). The machinery they
share (strategy, resumable fit, report, export) is `keras_circle.pipeline`.
`recipe_for(config)` picks the recipe of `config.task`; `keras-circle train`
and `evaluate` go through it, and `examples/<family>/train.py` names its
recipe directly.
"""

import argparse
import warnings

from keras_circle import cli_options
from keras_circle import pipeline
from keras_circle.config import ConfigError
from keras_circle.tasks import face_recognition
from keras_circle.tasks import fine_grained_retrieval
from keras_circle.tasks import person_reid


def recipe_for(config):
    """The `Recipe` of `config.task`.

    Raises:
        ConfigError: the task has no recipe (a config the loader checked
            always has one).
    """
    if config.task == "face_recognition":
        return face_recognition.RECIPE
    if config.task == "person_reid":
        return person_reid.RECIPE
    if config.task == "fine_grained_retrieval":
        return fine_grained_retrieval.RECIPE
    raise ConfigError(f"`task` {config.task!r} has no recipe.")


def train_and_evaluate(config, workdir, *, overwrite=False, allow_shape_change=False):
    """`keras_circle.pipeline.train_and_evaluate` with the recipe of `config.task`.

    Example:

    >>> config = keras_circle.config.load_config("configs/small/person_reid.json")
    >>> report = keras_circle.tasks.train_and_evaluate(config, "runs/reid")
    """
    return pipeline.train_and_evaluate(
        config,
        workdir,
        recipe_for(config),
        overwrite=overwrite,
        allow_shape_change=allow_shape_change,
    )


def evaluate(config, workdir):
    """`keras_circle.pipeline.evaluate` with the recipe of `config.task`."""
    return pipeline.evaluate(config, workdir, recipe_for(config))


def example_main(recipe, argv=None):
    """The command line of `examples/<family>/train.py` for `recipe`.

    `train.py [CONFIG] [--workdir DIR] [--set key=value] [--overwrite]`;
    CONFIG defaults to `configs/<task>.json`, DIR to `runs/<task>`.
    Prints the metrics.
    """
    from keras_circle import config as config_lib

    parser = argparse.ArgumentParser(
        description=f"Train and evaluate the {recipe.task} recipe."
    )
    cli_options.add_run_arguments(
        parser,
        "A .json or .toml config.",
        config_default=f"configs/{recipe.task}.json",
        workdir=f"runs/{recipe.task}",
    )
    cli_options.add_overwrite(parser)
    args = parser.parse_args(argv)
    config = config_lib.load_config(args.config, args.overrides)
    report = pipeline.train_and_evaluate(
        config, args.workdir, recipe, overwrite=args.overwrite
    )
    print(report["metrics"])
    return report


def example_train_and_evaluate(recipe):
    """`train_and_evaluate(config, workdir)` of `examples/<family>/train.py`.

    The Flax-style entry point of an example: trains and evaluates `config`
    (a `keras_circle.config.Config` of `recipe.task`) in `workdir` and
    returns the report dict, also written to `workdir/report.json`.
    """

    def train_and_evaluate(config, workdir):
        return pipeline.train_and_evaluate(config, workdir, recipe)

    train_and_evaluate.__doc__ = (
        f"Trains and evaluates `config` with the {recipe.task} recipe in "
        "`workdir`; returns the report dict (also `workdir/report.json`)."
    )
    return train_and_evaluate


def deprecated_train_lib(recipe):
    """`train_and_evaluate(config, workdir)` of the old `examples/*/train_lib.py`.

    Deprecated: it warns, then runs `recipe` as `train.py` of the same
    example folder does. Goes in the next release.
    """
    where = f"examples/{recipe.task}"
    run = example_train_and_evaluate(recipe)

    def train_and_evaluate(config, workdir):
        warnings.warn(
            f"{where}/train_lib.py is deprecated and goes in the next release; "
            f"use train_and_evaluate of {where}/train.py.",
            DeprecationWarning,
            stacklevel=2,
        )
        return run(config, workdir)

    return train_and_evaluate
