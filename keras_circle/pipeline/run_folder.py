"""A run folder: what an earlier run left there, read before anything is written.

A workdir holds one run. Running `train` again resumes it (from its backup),
trains it longer (a larger `train.epochs`), or finds it finished and leaves
it alone; `overwrite=True` starts over. A config that differs from the
folder's `config.json` in a key that changes what is trained is refused,
naming the keys: only `train.epochs`, `train.verbose` and `eval.*` may
change. Backups that cannot be read are never dropped without a word: a
readable previous copy is restored with a warning, otherwise the run stops
naming the files.

Backup layouts: Keras `BackupAndRestore` (`latest.weights.h5` and
`training_metadata.json`, each with a `.bkp` copy of the round before) for
`fit`; TensorFlow checkpoints (`checkpoint`, `ckpt-<step>.*`) for the custom
loop under `MultiWorkerMirroredStrategy`.
"""

import csv
import json
import pathlib
import shutil
import warnings

import h5py

from keras_circle import config as config_lib

# Keys a resumed or repeated run may change: they alter neither the model
# nor the steps already taken.
RESUMABLE_KEYS = ("train.epochs", "train.verbose", "eval.")
# `evaluate` loads the trained model: training settings do not matter to it,
# and data may have moved.
EVALUABLE_KEYS = ("train.", "eval.", "data.root", "data.tfds_data_dir", "data.lfw_root")
# What `overwrite=True` removes. `export/` stays: its SavedModel versions may
# be served, and the new run publishes the next version.
RUN_FILES = (
    "config.json",
    "backup",
    "checkpoints",
    "history.csv",
    "logs",
    "model.keras",
    "report.json",
    "plots",
    "evaluation",
)
_OVERWRITE = "pass --overwrite to start over (or use another --workdir)"


class RunFolderError(ValueError):
    """The workdir holds something that cannot be used as asked."""


def _flatten(values, prefix=""):
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_changes(old, new, allowed=RESUMABLE_KEYS):
    """`[(key, old_value, new_value)]` of two `Config`s outside `allowed` keys."""
    a, b = _flatten(config_lib.to_dict(old)), _flatten(config_lib.to_dict(new))
    return [
        (key, a[key], b[key])
        for key in a
        if a[key] != b[key] and not any(key.startswith(k) for k in allowed)
    ]


def read_config(workdir):
    """The `Config` in `workdir/config.json`, or `None` when there is none."""
    path = pathlib.Path(workdir) / "config.json"
    if not path.exists():
        return None
    try:
        return config_lib.from_dict(config_lib.read_file(path))
    except config_lib.ConfigError as error:
        raise RunFolderError(
            f"{path} (the config of the run in this folder) is unusable: {error} "
            f"Repair it, or {_OVERWRITE}."
        ) from None


def read_report(workdir):
    """`workdir/report.json` as a dict, or `None` when there is none."""
    path = pathlib.Path(workdir) / "report.json"
    if not path.exists():
        return None
    try:
        report = json.loads(path.read_text())
        int(report["steps"]), int(report["expected_steps"])
        return report
    except (ValueError, KeyError, TypeError) as error:
        raise RunFolderError(
            f"{path} is unreadable ({error!r}); {_OVERWRITE}."
        ) from None


def _describe(changes):
    return ", ".join(f"`{k}` {a!r} -> {b!r}" for k, a, b in changes)


def check_same_run(config, workdir):
    """Refuses a config that would change the run already in `workdir`.

    Raises:
        ConfigError: naming every key that differs from `workdir/config.json`
            outside `train.epochs`, `train.verbose` and `eval.*`.
        RunFolderError: the folder holds run files but no readable config.
    """
    workdir = pathlib.Path(workdir)
    previous = read_config(workdir)
    if previous is None:
        left = [name for name in RUN_FILES if (workdir / name).exists()]
        if left:
            raise RunFolderError(
                f"{workdir} holds {left} but no config.json: it is not a "
                f"keras-circle run this version can resume; {_OVERWRITE}."
            )
        return
    changes = config_changes(previous, config)
    if changes:
        raise config_lib.ConfigError(
            f"The config differs from the run in {workdir} (its config.json) in "
            f"{_describe(changes)}. A run there may change only `train.epochs`, "
            f"`train.verbose` and `eval.*`; {_OVERWRITE}."
        )


def finished_report(workdir, total):
    """The report of a run in `workdir` that finished exactly `total` steps."""
    report = read_report(workdir)
    workdir = pathlib.Path(workdir)
    if (
        report is not None
        and report["steps"] == report["expected_steps"] == total
        and (workdir / "model.keras").exists()
    ):
        return report
    return None


def _keras_backup_problem(weights, metadata):
    """Why a `BackupAndRestore` pair cannot be restored, or `None`."""
    for path in (weights, metadata):
        if not path.exists():
            return f"{path.name} is missing"
    try:
        with h5py.File(weights, "r"):
            pass
    except OSError as error:
        return f"{weights.name} is not a readable HDF5 file ({error})"
    try:
        values = json.loads(metadata.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        return f"{metadata.name} is not JSON ({error})"
    epoch = values.get("epoch") if isinstance(values, dict) else None
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        return f"{metadata.name} has no round count `epoch` >= 0 (holds {values!r})"
    return None


def _restore_keras_backup(backup_dir):
    """Rounds done in a `BackupAndRestore` folder; falls back to its copy."""
    weights = backup_dir / "latest.weights.h5"
    metadata = backup_dir / "training_metadata.json"
    problem = _keras_backup_problem(weights, metadata)
    if problem is None:
        return json.loads(metadata.read_text())["epoch"]
    copies = (pathlib.Path(f"{weights}.bkp"), pathlib.Path(f"{metadata}.bkp"))
    copy_problem = _keras_backup_problem(*copies)
    if copy_problem is None:
        rounds = json.loads(copies[1].read_text())["epoch"]
        warnings.warn(
            f"The backup in {backup_dir} is unreadable ({problem}); resuming from "
            f"its previous copy ({copies[0].name}, {copies[1].name}: round "
            f"{rounds}), which repeats the training of one round.",
            RuntimeWarning,
            stacklevel=3,
        )
        shutil.copyfile(copies[0], weights)
        shutil.copyfile(copies[1], metadata)
        return rounds
    raise RunFolderError(
        f"The backup in {backup_dir} cannot be restored: {problem}; its copy: "
        f"{copy_problem}. The files are left as they are; {_OVERWRITE}."
    )


def _checkpoint_steps(backup_dir):
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(str(backup_dir))
    try:
        return int(latest.rsplit("-", 1)[1])
    except (AttributeError, IndexError, ValueError):
        raise RunFolderError(
            f"{backup_dir}/checkpoint names no readable checkpoint ({latest!r}); "
            f"{_OVERWRITE}."
        ) from None


def resume_point(workdir, backup_every, total, steps_per_epoch):
    """Steps already trained in `workdir`, ready for `fit` to resume from.

    Restores a backup's readable previous copy (with a warning) when the
    latest one is unreadable, and trims `history.csv` to the rounds the
    backup holds, so no round is listed twice.

    Raises:
        ConfigError: `train.epochs` asks for fewer steps than were trained.
        RunFolderError: no readable backup where one is needed.
    """
    workdir = pathlib.Path(workdir)
    backup_dir = workdir / "backup"
    done = 0
    if (backup_dir / "checkpoint").exists():
        done = _checkpoint_steps(backup_dir)
    elif backup_dir.is_dir() and any(backup_dir.iterdir()):
        rounds = _restore_keras_backup(backup_dir)
        done = rounds * backup_every
        trim_history(workdir, rounds)
    report = read_report(workdir)
    trained = max(done, report["steps"] if report else 0)
    if trained > total:
        raise config_lib.ConfigError(
            f"`train.epochs` asks for {total} steps ({total // steps_per_epoch} "
            f"epochs) but the run in {workdir} has trained {trained} "
            f"({trained / steps_per_epoch:g} epochs); give at least that many "
            f"epochs, or {_OVERWRITE}."
        )
    if trained > done:
        raise RunFolderError(
            f"The run in {workdir} finished {trained} steps but kept no backup to "
            f"train longer from (runs made before backups were kept); {_OVERWRITE}."
        )
    return done


def _float(text):
    try:
        return float(text)
    except ValueError:  # CSVLogger writes "NA" for a metric it lacks
        return None


def read_history(workdir):
    """`history.csv` of `workdir` as `{column: [value per round]}`.

    A value the log lacks is `None`; no file gives `{}`.
    """
    path = pathlib.Path(workdir) / "history.csv"
    if not path.exists():
        return {}
    with path.open(newline="") as f:
        rows = [row for row in csv.DictReader(f) if row.get("epoch") != "epoch"]
    names = rows[0].keys() if rows else ()
    return {name: [_float(row[name]) for row in rows] for name in names}


def trim_history(workdir, rounds):
    """Drops rows of `history.csv` for rounds after the first `rounds`."""
    path = pathlib.Path(workdir) / "history.csv"
    if not path.exists():
        return
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows or "epoch" not in rows[0]:
        return
    column = rows[0].index("epoch")
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[column]) < rounds]
    if len(kept) != len(rows):
        with path.open("w", newline="") as f:
            csv.writer(f).writerows(kept)


def clear(workdir):
    """Removes what a run wrote in `workdir`, except published exports."""
    workdir = pathlib.Path(workdir)
    for name in RUN_FILES:
        path = workdir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def check_export_shapes(config, workdir):
    """Refuses a run whose export would change the served shapes, before training.

    The export refuses to publish a model whose input shape or embedding
    size differs from the latest version in `workdir/export/saved_model`
    (clients and search indexes built for it would break); this check says
    so before the training rather than after it.

    Raises:
        RunFolderError: naming both shapes, a new `--workdir` and
            `--allow-shape-change`.
    """
    from keras_circle.export.fingerprint import served_shapes
    from keras_circle.export.publish import latest_version

    base_dir = pathlib.Path(workdir) / "export" / "saved_model"
    latest = latest_version(base_dir)
    if latest is None:
        return
    height, width = config.data.image_size
    new = {
        "input_shape": [None, height, width, config.data.channels],
        "embedding_size": config.model.embedding_dim,
    }
    served = served_shapes(base_dir / str(latest))
    if served == new:
        return
    what = (
        "its shapes cannot be read"
        if served is None
        else f"it takes input {served['input_shape']} and gives embeddings of "
        f"size {served['embedding_size']}"
    )
    raise RunFolderError(
        f"The latest exported version {latest} in {base_dir}: {what}; this run "
        f"would export input {new['input_shape']} and embeddings of size "
        f"{new['embedding_size']}, which the export refuses after training. "
        "Train in a new --workdir, or pass --allow-shape-change to publish it "
        "as a new version anyway (clients and search indexes of the old one "
        "would break)."
    )


def check_evaluable(config, workdir):
    """Refuses to evaluate a workdir without a finished run, or as another run.

    Raises:
        RunFolderError: no workdir, no `model.keras`, no `config.json`.
        ConfigError: the config's task (or data, model, loss) differs from the
            run's, naming both.
    """
    workdir = pathlib.Path(workdir)
    if not workdir.is_dir():
        raise RunFolderError(f"No run folder {workdir}: train there first.")
    previous = read_config(workdir)
    if previous is None:
        raise RunFolderError(
            f"{workdir} has no config.json: it holds no keras-circle run to evaluate."
        )
    if not (workdir / "model.keras").exists():
        raise RunFolderError(
            f"{workdir} has no model.keras: its run has not finished (train it "
            "with the same command to resume)."
        )
    if previous.task != config.task:
        raise config_lib.ConfigError(
            f"The run in {workdir} was trained for task {previous.task!r}; the "
            f"config asks for {config.task!r}. Evaluate it with its own config "
            f"({workdir / 'config.json'})."
        )
    changes = config_changes(previous, config, EVALUABLE_KEYS)
    if changes:
        raise config_lib.ConfigError(
            f"The config differs from the run in {workdir} in {_describe(changes)}; "
            "evaluation may change only `eval.*` and the data folders. Evaluate "
            f"it with its own config ({workdir / 'config.json'})."
        )
