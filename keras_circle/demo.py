"""TensorFlow-only: the offline demo, a config run by the training pipeline.

`CONFIG` is the demo: the fine-grained retrieval recipe on the packaged
Fashion-MNIST subset (official split: 8,000 training images, 2,000
held-out test images), a small CNN, pair-wise Circle loss (gamma 80,
m 0.4) on P x K = 10 x 10 batches, Adam 2e-3 with cosine decay, XLA.
`run_demo` trains, evaluates and exports it with
`keras_circle.pipeline.train_and_evaluate`, exactly as `keras-circle train`
would, then adds what only the demo shows: retrieval on raw pixels
(flattened) on the same split, Recall@K of both in one plot, and the circle
decision boundary before and after training. The run folder's
`config.json` is the whole config, so `keras-circle evaluate
WORKDIR/config.json --workdir WORKDIR` evaluates the demo again. The
second demo, zero-shot retrieval of unseen characters (`keras-circle demo
--dataset glyphs`), is `keras_circle.glyph_demo`.
"""

import copy
import pathlib

import keras

from keras_circle import config as config_lib
from keras_circle import plots
from keras_circle import retrieval
from keras_circle.pipeline import evaluation
from keras_circle.pipeline import models
from keras_circle.pipeline import run
from keras_circle.tasks import fine_grained_retrieval

CONFIG = {
    "task": "fine_grained_retrieval",
    "data": {
        "source": "fashion_mnist",
        "split": "official",
        "p": 10,
        "k": 10,
        "image_size": [28, 28],
        "channels": 1,
    },
    "model": {"backbone": "small_cnn", "embedding_dim": 64, "width": 32},
    "loss": {"name": "circle", "labels": "pair", "gamma": 80.0, "margin": 0.4},
    "train": {
        "epochs": 6,
        "steps_per_epoch": 80,
        "optimizer": "adam",
        "learning_rate": 0.002,
        "lr_schedule": "cosine",
        "xla": True,
        "tensorboard": False,
        "seed": 0,
    },
    "eval": {"ks": [1, 2, 4, 8], "batch_size": 500},
}


def demo_config(epochs=6, steps_per_epoch=80, verbose=1):
    """`CONFIG` as a checked `Config`, with the run's length and verbosity."""
    values = copy.deepcopy(CONFIG)
    values["train"].update(
        epochs=epochs, steps_per_epoch=steps_per_epoch, verbose=verbose
    )
    return config_lib.from_dict(values)


def _results(x, labels, ks):
    return {
        "recall_at_k": retrieval.recall_at_k(x, labels, ks=ks, verbose=0),
        "map_at_r": retrieval.map_at_r(x, labels, verbose=0),
    }


def run_demo(
    workdir="keras_circle_demo",
    *,
    epochs=6,
    steps_per_epoch=80,
    verbose=1,
    overwrite=False,
):
    """Runs the demo and returns its report.

    `workdir` is a run folder as for `keras-circle train`: a finished demo
    is not trained again, a larger `epochs` trains it longer, another
    `steps_per_epoch` is refused unless `overwrite`.

    Args:
        workdir: Output folder. Defaults to `"keras_circle_demo"`.
        epochs: Training epochs. Defaults to `6`.
        steps_per_epoch: P x K batches (10 x 10) per epoch. Defaults to `80`
            (one pass over the 8,000 training images).
        verbose: `1` shows progress bars and the summary. Defaults to `1`.
        overwrite: Start over in `workdir`. Defaults to `False`.

    Returns:
        The pipeline's report (config, metrics, artifacts) with `results`
        (`circle_loss` and `raw_pixels`: Recall@K and MAP@R) and
        `recall_at_1_gain_over_pixels`, as written to `workdir/report.json`.

    Raises:
        ValueError: `epochs` or `steps_per_epoch` is not a positive integer.
        keras_circle.config.ConfigError,
        keras_circle.pipeline.run_folder.RunFolderError: `workdir` holds
            another run.
    """
    for name, value in (("epochs", epochs), ("steps_per_epoch", steps_per_epoch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer; got {value!r}.")
    workdir = pathlib.Path(workdir)
    config = demo_config(epochs, steps_per_epoch, verbose)
    recipe = fine_grained_retrieval.RECIPE
    # The untrained embedder: the pipeline seeds the same way before it
    # builds the model, so these are its initial weights.
    keras.utils.set_random_seed(config.train.seed)
    untrained = models.build_embedder(config)
    report = run.train_and_evaluate(config, workdir, recipe, overwrite=overwrite)

    task_data = recipe.load_data(config)
    images, labels, _ = task_data.eval_sets["test"]
    trained = keras.saving.load_model(workdir / "model.keras")
    size = config.eval.batch_size
    before = evaluation.embed(untrained, images, task_data, size)
    after = evaluation.embed(trained, images, task_data, size)
    pixels = images.reshape(len(images), -1).astype("float32")
    ks = config.eval.ks
    results = {
        "circle_loss": _results(after, labels, ks),
        "raw_pixels": _results(pixels, labels, ks),
    }
    plot_dir = workdir / "plots"
    plots.plot_recall_at_k(
        {name: r["recall_at_k"] for name, r in results.items()},
        plot_dir / "recall_at_k.png",
        title="Fashion-MNIST held-out Recall@K",
    )
    plots.plot_circle_boundary(
        {
            "before": plots.pair_similarities(before, labels),
            "after": plots.pair_similarities(after, labels),
        },
        plot_dir / "circle_boundary.png",
        margin=config.loss.margin,
    )
    gain = results["circle_loss"]["recall_at_k"][1]
    gain -= results["raw_pixels"]["recall_at_k"][1]
    report.update(results=results, recall_at_1_gain_over_pixels=gain)
    report["artifacts"]["plots"] = sorted(str(p) for p in plot_dir.glob("*.png"))
    report = evaluation.jsonable(report)
    report_path = evaluation.write_report(workdir, report)
    if verbose:
        print(summary(report, report_path))
    return report


def summary(report, report_path):
    """A short text table of the demo's results and where its files are."""
    ks = [str(k) for k in report["config"]["eval"]["ks"]]
    lines = [f"{'embedding':<12} " + " ".join(f"{'R@' + k:>6}" for k in ks)]
    lines[0] += f" {'MAP@R':>6}"
    for name, r in report["results"].items():
        row = " ".join(f"{r['recall_at_k'][k]:6.3f}" for k in ks)
        lines.append(f"{name:<12} {row} {r['map_at_r']:6.3f}")
    art = report["artifacts"]
    lines += [
        f"Recall@1 gain over raw pixels: {report['recall_at_1_gain_over_pixels']:+.3f}",
        f"time: {report['seconds']['total']:.0f} s",
        f"report:      {report_path}",
        f"plots:       {', '.join(art['plots'])}",
        f"SavedModel:  {art.get('saved_model')}",
        f"ONNX:        {art.get('onnx')}",
    ]
    return "\n".join(lines)
