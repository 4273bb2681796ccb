"""TensorFlow-only: one training run from a `Config`, shared by the examples.

`train_and_evaluate(config, workdir)` trains under `MirroredStrategy` (every
visible GPU, else the CPU) with Keras `fit`, or under
`MultiWorkerMirroredStrategy` with the custom loop of
`keras_circle.training` when `TF_CONFIG` names a cluster; then it evaluates
with the task's protocol, writes `report.json` and PNG plots, and exports the
embedder (SavedModel for TF Serving, ONNX).

Resumability: `fit` runs `train.epochs * train.steps_per_epoch /
train.backup_every` rounds of `backup_every` steps (a Keras "epoch" is one
round), and `keras.callbacks.BackupAndRestore` backs the model and optimizer
up after every round. Keras 3 restores a backup at a round boundary only, so
backing up at round ends keeps weights, optimizer state and step count
consistent: a run killed anywhere restarts from the last round with the same
total number of steps. The P x K stream restarts from its seed on resume.

Workdir layout: `config.json`, `backup/`, `checkpoints/last.keras`,
`history.csv`, `logs/` (TensorBoard), `model.keras`, `report.json`,
`plots/*.png`, `export/saved_model/<version>/`, `export/embedder.onnx`.
"""

import csv
import importlib.util
import json
import os
import pathlib
import shutil
import time

import h5py
import keras
import tensorflow as tf

from keras_circle import config as config_lib
from keras_circle import data
from keras_circle import distribute
from keras_circle.pipeline import evaluation
from keras_circle.pipeline import models
from keras_circle.pipeline.datasets import load_task_data


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


def _readable_backup(weights, metadata):
    try:
        with h5py.File(weights, "r"):
            pass
        json.loads(metadata.read_text())
        return True
    except (OSError, ValueError):
        return False


def _drop_unreadable_backup(backup_dir):
    """Leaves `backup_dir` readable for `BackupAndRestore`, or removes it.

    Keras writes its backup in place: a run killed while writing leaves a
    truncated weights file (or no metadata). Keras falls back to the previous
    backup (`double_checkpoint=True`) only for an unreadable weights file and
    only when a previous backup exists; a kill during the very first backup
    has none. Here the previous backup is restored when it is readable, and
    otherwise the half-written one is removed so the run starts afresh.
    """
    weights = backup_dir / "latest.weights.h5"
    metadata = backup_dir / "training_metadata.json"
    if not backup_dir.exists() or _readable_backup(weights, metadata):
        return
    previous = (pathlib.Path(f"{weights}.bkp"), pathlib.Path(f"{metadata}.bkp"))
    if all(p.exists() for p in previous) and _readable_backup(*previous):
        shutil.copyfile(previous[0], weights)
        shutil.copyfile(previous[1], metadata)
        return
    shutil.rmtree(backup_dir)


def _fit(config, workdir, task, strategy, total, steps_per_epoch, backup_every):
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
        embedder = models.build_embedder(config)
        model = models.build_training_model(config, embedder, task.num_classes)
        # XLA with MirroredStrategy fails (keras-team/keras 19005): one replica only.
        jit = tc.xla and strategy.num_replicas_in_sync == 1
        model.compile(
            optimizer=models.build_optimizer(config, total),
            loss=models.build_loss(config),
            jit_compile=jit,
        )
    callbacks = [
        # A kill while the backup is being written leaves a truncated HDF5
        # file; with double_checkpoint Keras keeps the previous backup and
        # falls back to it on restart.
        keras.callbacks.BackupAndRestore(
            str(workdir / "backup"), save_freq="epoch", double_checkpoint=True
        ),
        keras.callbacks.ModelCheckpoint(str(workdir / "checkpoints" / "last.keras")),
        keras.callbacks.CSVLogger(str(workdir / "history.csv"), append=True),
        keras.callbacks.TerminateOnNaN(),
    ]
    # tf.summary needs the `tensorboard` package, which tensorflow-cpu does
    # not always bring; a run without it still trains.
    if tc.tensorboard and importlib.util.find_spec("tensorboard") is not None:
        callbacks.append(keras.callbacks.TensorBoard(str(workdir / "logs")))
    model.fit(
        ds,
        epochs=total // backup_every,
        steps_per_epoch=backup_every,
        callbacks=callbacks,
        verbose=tc.verbose,
    )
    return model, embedder, int(model.optimizer.iterations.numpy())


def _fit_multi_worker(config, workdir, task, strategy, total, steps_per_epoch):
    from keras_circle import training

    def model_fn():
        embedder = models.build_embedder(config)
        return models.build_training_model(config, embedder, task.num_classes)

    model, history = training.train_loop(
        strategy,
        model_fn=model_fn,
        loss=models.build_loss(config),
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
    steps = history["step"][-1] if history["step"] else total
    return model, export.get_embedder(model), steps


def _float(text):
    try:
        return float(text)
    except ValueError:  # CSVLogger writes "NA" for a metric it lacks
        return None


def _history(workdir):
    path = workdir / "history.csv"
    if not path.exists():
        return {}
    with path.open() as f:
        rows = [row for row in csv.DictReader(f) if row.get("epoch") != "epoch"]
    names = rows[0].keys() if rows else ()
    return {name: [_float(row[name]) for row in rows] for name in names}


def train_and_evaluate(config, workdir):
    """Trains, evaluates, plots and exports one run; resumes a killed one.

    Args:
        config: A `keras_circle.config.Config`.
        workdir: Folder of the run (created). Running again with the same
            workdir resumes from its last backup.

    Returns:
        The report dict, also written to `workdir/report.json`.

    Example:

    >>> config = keras_circle.config.load_config("configs/small/person_reid.json")
    >>> report = train_and_evaluate(config, "runs/reid")
    """
    start = time.time()
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(
        json.dumps(config_lib.to_dict(config), indent=2)
    )
    keras.utils.set_random_seed(config.train.seed)
    if config.train.mixed_precision:
        keras.config.set_dtype_policy(config.train.mixed_precision)
    _drop_unreadable_backup(workdir / "backup")
    if not (workdir / "backup").exists():
        # A fresh run (no backup to resume): start the history anew.
        (workdir / "history.csv").unlink(missing_ok=True)
    task = load_task_data(config)
    strategy = select_strategy(config.train.replicas)
    steps_per_epoch, backup_every, total = _schedule(config, task)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        model, embedder, steps = _fit_multi_worker(
            config, workdir, task, strategy, total, steps_per_epoch
        )
    else:
        model, embedder, steps = _fit(
            config, workdir, task, strategy, total, steps_per_epoch, backup_every
        )
    train_seconds = time.time() - start
    model.save(workdir / "model.keras")
    report = evaluation.evaluate_and_report(config, workdir, embedder, task)
    report.update(
        steps=steps,
        expected_steps=total,
        replicas=strategy.num_replicas_in_sync,
        strategy=type(strategy).__name__,
        history=_history(workdir),
        seconds={"train": train_seconds, "total": time.time() - start},
    )
    report["artifacts"].update(
        evaluation.export_embedder(config, workdir, embedder, task)
    )
    report["seconds"]["total"] = time.time() - start
    evaluation.write_report(workdir, report)
    return report


def evaluate(config, workdir):
    """Evaluates the `model.keras` of a finished run again; rewrites the report."""
    workdir = pathlib.Path(workdir)
    model = keras.saving.load_model(workdir / "model.keras")
    from keras_circle import export

    embedder = export.get_embedder(model)
    report = evaluation.evaluate_and_report(
        config, workdir, embedder, load_task_data(config)
    )
    evaluation.write_report(workdir, report)
    return report
