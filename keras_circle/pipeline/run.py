"""TensorFlow-only: one training run from a `Config` and its family's recipe.

`train_and_evaluate(config, workdir, recipe)` trains under `MirroredStrategy` (every
visible GPU, else the CPU) with Keras `fit`, or under
`MultiWorkerMirroredStrategy` with the custom loop of
`keras_circle.training` when `TF_CONFIG` names a cluster; then it evaluates
with the recipe's protocol, writes `report.json` and PNG plots, and exports the
embedder (SavedModel for TF Serving, ONNX).

Resumability: `fit` runs `train.epochs * train.steps_per_epoch /
train.backup_every` rounds of `backup_every` steps (a Keras "epoch" is one
round), and `keras.callbacks.BackupAndRestore` backs the model and optimizer
up after every round. Keras 3 restores a backup at a round boundary only, so
backing up at round ends keeps weights, optimizer state and step count
consistent: a run killed anywhere restarts from the last round with the same
total number of steps. The P x K stream restarts from its seed on resume.
The backup is kept after the last round, so that a larger `train.epochs`
trains a finished run longer; `run_folder` decides what a workdir allows.

Nothing silent: a non-finite loss (or, under XLA, where a loss may not see
its NaN inputs, non-finite weights at a round's end) stops training with
`keras_circle.training.TrainingDivergedError` before that round is backed
up, and a run that did not train all its steps writes no model, report or
export.

Workdir layout: `config.json`, `backup/`, `checkpoints/last.keras`,
`history.csv`, `logs/` (TensorBoard: `train/` the loss and the training
diagnostics of `keras_circle.metrics` per round, `evaluation/` the
evaluation's metrics at the last step), `model.keras`, `report.json`,
`plots/*.png`, `export/saved_model/<version>/`, `export/embedder.onnx`.
"""

import importlib.util
import json
import math
import os
import pathlib
import time

import keras
import numpy as np
import tensorflow as tf

from keras_circle import callbacks as callbacks_lib
from keras_circle import config as config_lib
from keras_circle import console
from keras_circle import data
from keras_circle import distribute
from keras_circle import training
from keras_circle.pipeline import evaluation
from keras_circle.pipeline import models
from keras_circle.pipeline import run_folder
from keras_circle.pipeline import summaries


def select_strategy(replicas=0):
    """`MultiWorkerMirroredStrategy` under `TF_CONFIG`, else `MirroredStrategy`.

    `MirroredStrategy()` takes every visible GPU, or the CPU when there is
    none (or the logical CPUs when the CPU was split beforehand); with
    `replicas > 0` only the first `replicas` of those devices.
    """
    if json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    return distribute.mirrored_strategy(replicas)


def _schedule(config, task):
    tc = config.train
    p, k = config.data.p, config.data.k
    steps_per_epoch = tc.steps_per_epoch or max(1, len(task.source.labels) // (p * k))
    backup_every = tc.backup_every or steps_per_epoch
    if steps_per_epoch % backup_every:
        raise config_lib.ConfigError(
            f"`train.backup_every` ({backup_every}) must divide the steps per "
            f"epoch ({steps_per_epoch})."
        )
    total = tc.epochs * steps_per_epoch
    return steps_per_epoch, backup_every, total


class _DivergenceGuard(keras.callbacks.Callback):
    """Stops `fit` at a non-finite loss or weights, before they are backed up.

    It comes first among the callbacks and raises (rather than setting
    `stop_training`, as `keras.callbacks.TerminateOnNaN` does), so that no
    later callback backs up, checkpoints or logs the diverged round.
    """

    def __init__(self, schedule, start):
        super().__init__()
        self.steps_per_epoch, self.backup_every, total = schedule
        self.epochs = total // self.steps_per_epoch
        self.start = start
        self.round = self.batch = 0
        self.first = True

    @property
    def step(self):
        return self.round * self.backup_every + self.batch + 1

    def diverged(self, detail):
        epoch = math.ceil(self.step / self.steps_per_epoch)
        where = f" (epoch {epoch} of {self.epochs})"
        return training.TrainingDivergedError(self.step, detail, where)

    def on_epoch_begin(self, epoch, logs=None):
        self.round = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self.batch = batch
        if self.first:
            self.first = False
            restored = int(self.model.optimizer.iterations.numpy())
            if restored != self.start:
                # Keras writes the weights, then the round count: a kill in
                # between leaves a backup one round ahead of its metadata.
                raise run_folder.RunFolderError(
                    f"The backup's weights are at step {restored} but its "
                    f"metadata says step {self.start}: it was cut while being "
                    "written. Pass --overwrite to start over."
                )

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(np.asarray(loss)).all():
            raise self.diverged(f"loss {float(np.asarray(loss))}")

    def on_epoch_end(self, epoch, logs=None):
        for weight in self.model.weights:
            if not bool(keras.ops.all(keras.ops.isfinite(weight))):
                self.batch = self.backup_every - 1
                raise self.diverged(f"weight {weight.path!r} is NaN or infinite")


def _fit(config, workdir, recipe, task, strategy, schedule, start):
    steps_per_epoch, backup_every, total = schedule
    tc = config.train
    ds = data.pk_batches(
        task.source,
        config.data.p,
        config.data.k,
        seed=tc.seed,
        preprocess=task.preprocess_train,
        steps_per_epoch=steps_per_epoch,
    )
    with strategy.scope():
        model, embedder = recipe.build_model(config, task.num_classes)
        # XLA with MirroredStrategy fails (keras-team/keras 19005): one replica only.
        jit = tc.xla and strategy.num_replicas_in_sync == 1
        model.compile(
            optimizer=models.build_optimizer(config, total),
            loss=recipe.build_loss(config),
            # valid_anchors, mean_s_p, ... in the progress bar, history.csv
            # and TensorBoard (keras_circle.metrics).
            metrics=models.build_metrics(config),
            jit_compile=jit,
        )
    guard = _DivergenceGuard(schedule, start)
    callbacks = [
        guard,
        # A kill while the backup is being written leaves a truncated HDF5
        # file; with double_checkpoint Keras keeps the previous backup as
        # `.bkp`, which run_folder restores. The backup outlives the run so
        # that it can be trained longer.
        keras.callbacks.BackupAndRestore(
            str(workdir / "backup"),
            save_freq="epoch",
            double_checkpoint=True,
            delete_checkpoint=False,
        ),
        keras.callbacks.ModelCheckpoint(str(workdir / "checkpoints" / "last.keras")),
        # Keras's CSVLogger would add val_* columns that stay NA.
        callbacks_lib.HistoryCSVLogger(str(workdir / "history.csv"), append=True),
    ]
    if config.loss.labels == "pair":
        callbacks.append(callbacks_lib.ValidAnchorCheck())
    # tf.summary needs the `tensorboard` package, which tensorflow-cpu does
    # not always bring; a run without it still trains.
    if tc.tensorboard and importlib.util.find_spec("tensorboard") is not None:
        callbacks.append(keras.callbacks.TensorBoard(str(workdir / "logs")))
    try:
        model.fit(
            ds,
            epochs=total // backup_every,
            steps_per_epoch=backup_every,
            callbacks=callbacks,
            # P x K batches are drawn shuffled; Keras would warn that a
            # dataset ignores its default `shuffle=True`.
            shuffle=False,
            verbose=console.progress_verbosity(tc.verbose),
        )
    except tf.errors.InvalidArgumentError as error:
        # The loss's own finite-input assertion (graph mode without XLA).
        if not training.is_non_finite_error(error):
            raise
        raise guard.diverged(training.assertion_message(error)) from None
    return model, embedder, int(model.optimizer.iterations.numpy())


def _fit_multi_worker(config, workdir, recipe, task, strategy, schedule, start):
    steps_per_epoch, _, total = schedule

    def model_fn():
        return recipe.build_model(config, task.num_classes)[0]

    model, history = training.train_loop(
        strategy,
        model_fn=model_fn,
        loss=recipe.build_loss(config),
        optimizer_fn=lambda: models.build_optimizer(config, total),
        dataset_fn=data.pk_dataset_fn(
            task.source,
            config.data.p,
            config.data.k,
            seed=config.train.seed,
            preprocess=task.preprocess_train,
            steps_per_epoch=steps_per_epoch,
        ),
        steps=total,
        checkpoint_dir=str(workdir / "backup"),
        checkpoint_every=config.train.backup_every or steps_per_epoch,
        verbose=config.train.verbose,
    )
    from keras_circle import export

    # The loop runs to `total` (a resumed run from its checkpoint's step on).
    steps = history["step"][-1] if history["step"] else start
    return model, export.get_embedder(model), steps


def _check_recipe(config, recipe):
    if config.task != recipe.task:
        raise config_lib.ConfigError(
            f"This recipe runs task {recipe.task!r}; the config says "
            f"`task` {config.task!r}."
        )


def train_and_evaluate(
    config, workdir, recipe, *, overwrite=False, allow_shape_change=False
):
    """Trains, evaluates, plots and exports one run; resumes a killed one.

    Before anything is written, the workdir is checked (`run_folder`): a
    config that changes its run is refused naming the keys; a finished run
    of the same length is left as it is (its report is returned); a larger
    `train.epochs` trains it longer from its backup.

    Args:
        config: A `keras_circle.config.Config`.
        workdir: Folder of the run (created). Running again with the same
            workdir resumes from its last backup.
        recipe: The `Recipe` of `config.task` (`keras_circle.tasks.recipe_for`).
        overwrite: Remove the workdir's earlier run (all but `export/`,
            whose published versions stay) and start over. Defaults to
            `False`.
        allow_shape_change: Train and publish even if the model's input
            shape or embedding size differs from the latest SavedModel
            version in `workdir/export/saved_model` (otherwise refused
            before training). Defaults to `False`.

    Returns:
        The report dict, also written to `workdir/report.json`.

    Raises:
        keras_circle.config.ConfigError: the config conflicts with the run
            already in `workdir`.
        keras_circle.pipeline.run_folder.RunFolderError: the workdir's
            backup or files cannot be used.
        keras_circle.training.TrainingDivergedError: the loss or weights
            became NaN or infinite; nothing was saved or exported.

    Example:

    >>> config = keras_circle.config.load_config("configs/small/person_reid.json")
    >>> recipe = keras_circle.tasks.recipe_for(config)
    >>> report = train_and_evaluate(config, "runs/reid", recipe)
    """
    start_time = time.time()
    workdir = pathlib.Path(workdir)
    _check_recipe(config, recipe)
    if not overwrite:
        run_folder.check_same_run(config, workdir)
    # Weights or a keras-hub preset that cannot be had stop the run here,
    # before the data (minutes on a large set) are read.
    models.prepare_backbone(config)
    task = recipe.load_data(config)
    steps_per_epoch, backup_every, total = schedule = _schedule(config, task)
    report = None if overwrite else run_folder.finished_report(workdir, total)
    if report is not None:
        print(
            f"{workdir} holds this run, finished ({total} steps): nothing to "
            f"train. Results: {workdir / 'report.json'}, "
            f"{workdir / 'model.keras'}; --overwrite trains it again."
        )
        return report
    if config.eval.export_saved_model and not allow_shape_change:
        # The export would refuse a shape change only after all the training.
        run_folder.check_export_shapes(config, workdir)
    if overwrite:
        run_folder.clear(workdir)
        start = 0
    else:
        start = run_folder.resume_point(workdir, backup_every, total, steps_per_epoch)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(
        json.dumps(config_lib.to_dict(config), indent=2)
    )
    keras.utils.set_random_seed(config.train.seed)
    if config.train.mixed_precision:
        keras.config.set_dtype_policy(config.train.mixed_precision)
    if not start:
        # A fresh run (no backup to resume): start the history anew.
        (workdir / "history.csv").unlink(missing_ok=True)
    strategy = select_strategy(config.train.replicas)
    fit = (
        _fit_multi_worker
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        else _fit
    )
    model, embedder, steps = fit(
        config, workdir, recipe, task, strategy, schedule, start
    )
    if steps != total:
        raise run_folder.RunFolderError(
            f"The run in {workdir} trained to step {steps} of {total}; nothing "
            "was saved or exported. Pass --overwrite to start over."
        )
    train_seconds = time.time() - start_time
    model.save(workdir / "model.keras")
    history = run_folder.read_history(workdir)
    report = evaluation.evaluate_and_report(
        config, workdir, embedder, task, recipe, history=history
    )
    report.update(
        steps=steps,
        expected_steps=total,
        replicas=strategy.num_replicas_in_sync,
        strategy=type(strategy).__name__,
        history=history,
        seconds={"train": train_seconds, "total": time.time() - start_time},
    )
    report["artifacts"].update(
        evaluation.export_embedder(
            config, workdir, embedder, task, allow_shape_change=allow_shape_change
        )
    )
    if config.train.tensorboard:
        summaries.write_evaluation(
            workdir / "logs" / "evaluation", report["metrics"], steps
        )
    report["seconds"]["total"] = time.time() - start_time
    evaluation.write_report(workdir, report)
    return report


def evaluate(config, workdir, recipe):
    """Evaluates the `model.keras` of a finished run again.

    The training run's `report.json` and plots stay as they are; this
    evaluation goes to `workdir/evaluation/report.json` and
    `workdir/evaluation/plots/`.

    Args:
        config: The run's `Config` (only `eval.*` and data folders may differ).
        workdir: The run folder.
        recipe: The `Recipe` of `config.task` (`keras_circle.tasks.recipe_for`).

    Raises:
        keras_circle.pipeline.run_folder.RunFolderError: no finished run in
            `workdir`.
        keras_circle.config.ConfigError: the config's task (or data, model,
            loss) differs from the run's; both are named.
    """
    workdir = pathlib.Path(workdir)
    _check_recipe(config, recipe)
    run_folder.check_evaluable(config, workdir)
    model = keras.saving.load_model(workdir / "model.keras")
    from keras_circle import export

    embedder = export.get_embedder(model)
    out = workdir / "evaluation"
    report = evaluation.evaluate_and_report(
        config,
        workdir,
        embedder,
        recipe.load_data(config),
        recipe,
        out_dir=out,
        history=run_folder.read_history(workdir),
    )
    evaluation.write_report(out, report)
    return report
