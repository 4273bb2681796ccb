"""TensorFlow-only: embedding test images, the report, and the export.

The protocols themselves (what is measured) belong to each family's recipe
(`keras_circle.tasks`); this module embeds test images on the task's
test-time spec, assembles and writes `report.json`, and exports the
embedder with that same spec, so served embeddings equal evaluated ones.
"""

import json

import numpy as np
import tensorflow as tf

from keras_circle.pipeline import models
from keras_circle.pipeline.datasets import image_dataset


def embed(embedder, items, task_data, batch_size, flip=False):
    """Embeddings of test images (arrays, file paths or a TFDS source).

    Images go through `task_data.preprocessing`'s test-time path
    (`keras_circle.data.test_time_image`), the one the export serves.
    With `flip` (flip test), each embedding is the mean of the embeddings
    of the image and of its mirror image (width reversed), as fast-reid's
    `TEST.FLIP.ENABLED` averages them; the metrics L2-normalise it. The
    export serves the plain embedding.
    """
    ds = image_dataset(items, task_data.preprocess_test, batch_size)
    out = np.asarray(embedder.predict(ds, verbose=0), dtype=np.float32)
    if flip:
        # Batches are (batch, height, width, channels): axis 2 is the width.
        mirrored = ds.map(lambda x: tf.reverse(x, axis=[2]))
        out = (out + np.asarray(embedder.predict(mirrored, verbose=0), np.float32)) / 2
    return out


def plot_circle_boundary(config, embeddings, labels, plot_dir):
    """`plot_dir/circle_boundary.png` of a pair-wise run, else nothing.

    Each test sample's mean `(s_n, s_p)` against the Eq. 8 circle of the
    run's margin: what the pair-wise loss pushed the pairs towards.
    """
    if config.loss.labels != "pair" or not config.eval.plots:
        return None
    from keras_circle import plots

    s_p, s_n = plots.pair_similarities(embeddings, labels)
    return plots.plot_circle_boundary(
        {"test set": (s_p, s_n)},
        plot_dir / "circle_boundary.png",
        margin=config.loss.margin,
        title=f"Test pairs vs the Circle loss boundary, m={config.loss.margin:g}",
    )


def jsonable(value):
    """`value` with NumPy arrays and scalars as lists and numbers, keys as str."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _has_statistics(history):
    """True when `history` holds a finite `mean_s_p` and `mean_s_n` round."""
    s_p = (history or {}).get("mean_s_p") or []
    s_n = (history or {}).get("mean_s_n") or []
    return any(
        p is not None and n is not None and np.isfinite([p, n]).all()
        for p, n in zip(s_p, s_n, strict=False)
    )


def evaluate_and_report(
    config, workdir, embedder, task_data, recipe, out_dir=None, history=None
):
    """Runs the recipe's protocol; returns the report dict (not yet written).

    Plots go to `out_dir/plots` (`out_dir` defaults to `workdir`), with the
    training loss of `history` (`run_folder.read_history`) when it has one.
    """
    from keras_circle import config as config_lib
    from keras_circle import plots

    plot_dir = (out_dir or workdir) / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    metrics = recipe.evaluate(config, embedder, task_data, plot_dir)
    losses = (history or {}).get("loss") or []
    if config.eval.plots and any(loss is not None for loss in losses):
        # One history row per round of `backup_every` steps (one epoch when
        # neither is set): the x axis counts training steps.
        tc = config.train
        per_round = tc.backup_every or tc.steps_per_epoch or None
        plots.plot_loss_curve(losses, plot_dir / "loss.png", steps_per_round=per_round)
    if config.eval.plots and _has_statistics(history):
        # The pair-wise diagnostics per round against the Eq. 8 circle.
        plots.plot_similarity_trajectory(
            history,
            plot_dir / "circle_trajectory.png",
            margin=models.statistics_margin(config),
        )
    return {
        "task": config.task,
        "metrics": jsonable(metrics),
        "config": config_lib.to_dict(config),
        "artifacts": {
            "model": str(workdir / "model.keras"),
            "plots": sorted(str(p) for p in plot_dir.glob("*.png")),
        },
    }


def export_embedder(config, workdir, embedder, task_data, *, allow_shape_change=False):
    """Exports the embedder as asked by `config.eval`; returns the paths.

    The exports record and serve `task_data.preprocessing`, the spec the
    evaluation embedded its test images with.
    """
    from keras_circle import export

    # Both exports serve the evaluated spec and report progress alike.
    common = {
        "preprocessing": task_data.preprocessing,
        "progress": config.train.verbose > 0,
    }
    out = {}
    if config.eval.export_saved_model:
        out["saved_model"] = export.export_saved_model(
            embedder,
            workdir / "export" / "saved_model",
            allow_shape_change=allow_shape_change,
            **common,
        )
    if config.eval.export_onnx:
        out["onnx"] = export.export_onnx(
            embedder, workdir / "export" / "embedder.onnx", **common
        )
    return {name: str(path) for name, path in out.items()}


def write_report(workdir, report):
    """Writes `report.json` atomically (a killed run never leaves half a file)."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "report.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(jsonable(report), indent=2))
    tmp.replace(path)
    return path
