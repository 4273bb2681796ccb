"""TensorFlow-only: the offline demo on the packaged Fashion-MNIST subset.

Trains a small CNN embedder with pair-wise Circle loss (gamma 80, m 0.4) on
P x K batches of the official training split, then retrieves among the
held-out test images: Recall@1/2/4/8 and MAP@R of the embedder next to raw
pixels (flattened, L2-normalised) on the same split. Writes `report.json`,
plots (Recall@K model vs pixels, the circle decision boundary before and
after training, similarity histograms), a TF Serving SavedModel and an ONNX
file, and prints where they are.
"""

import json
import pathlib
import time

import keras
import tensorflow as tf

import keras_circle as kc
from keras_circle import data
from keras_circle import plots
from keras_circle import retrieval
from keras_circle.pipeline.models import small_cnn

KS = (1, 2, 4, 8)


def _metrics(x, labels):
    return {
        "recall_at_k": retrieval.recall_at_k(x, labels, ks=KS, verbose=0),
        "map_at_r": retrieval.map_at_r(x, labels, verbose=0),
    }


def run_demo(workdir="keras_circle_demo", *, epochs=6, steps_per_epoch=80, verbose=1):
    """Runs the demo and returns its report.

    Args:
        workdir: Output folder. Defaults to `"keras_circle_demo"`.
        epochs: Training epochs. Defaults to `6`.
        steps_per_epoch: P x K batches (10 x 10) per epoch. Defaults to `80`
            (one pass over the 8,000 training images).
        verbose: `1` shows progress bars and the summary. Defaults to `1`.

    Returns:
        The report dict written to `workdir/report.json`.

    Raises:
        ValueError: `epochs` or `steps_per_epoch` is not a positive integer.
    """
    for name, value in (("epochs", epochs), ("steps_per_epoch", steps_per_epoch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer; got {value!r}.")
    start = time.time()
    workdir = pathlib.Path(workdir)
    (workdir / "plots").mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test), _ = data.load_fashion_mnist_subset()
    test = x_test[..., None].astype("float32") / 255.0

    def scale(image, label):
        return tf.cast(image, tf.float32) / 255.0, label

    batches = data.pk_batches(
        data.ArraySource(x_train[..., None], y_train),
        p=10,
        k=10,
        seed=0,
        preprocess=scale,
        steps_per_epoch=steps_per_epoch,
    )
    model = small_cnn((28, 28, 1), embedding_dim=64, width=32)
    total = epochs * steps_per_epoch
    lr = keras.optimizers.schedules.CosineDecay(2e-3, total)
    # One device, no tf.distribute: XLA compiles the step (DESIGN.md 5).
    model.compile(
        keras.optimizers.Adam(lr),
        kc.CircleLoss(gamma=80.0, margin=0.4),
        jit_compile=True,
    )
    before = model.predict(test, batch_size=500, verbose=0)
    model.fit(batches, epochs=epochs, steps_per_epoch=steps_per_epoch, verbose=verbose)
    train_seconds = time.time() - start
    after = model.predict(test, batch_size=500, verbose=0)

    pixels = x_test.reshape(len(x_test), -1).astype("float32")
    results = {
        "circle_loss": _metrics(after, y_test),
        "raw_pixels": _metrics(pixels, y_test),
    }
    plot_paths = {
        "recall_at_k": plots.plot_recall_at_k(
            {name: r["recall_at_k"] for name, r in results.items()},
            workdir / "plots" / "recall_at_k.png",
            title="Fashion-MNIST held-out Recall@K",
        ),
        "circle_boundary": plots.plot_circle_boundary(
            {
                "before": plots.pair_similarities(before, y_test),
                "after": plots.pair_similarities(after, y_test),
            },
            workdir / "plots" / "circle_boundary.png",
            margin=0.4,
        ),
        "similarities": plots.plot_similarity_histograms(
            after, y_test, workdir / "plots" / "similarities.png", margin=0.4
        ),
    }
    from keras_circle import export

    saved_model = export.export_saved_model(
        model, workdir / "saved_model", progress=bool(verbose)
    )
    onnx_path = export.export_onnx(
        model, workdir / "embedder.onnx", progress=bool(verbose)
    )
    gain = (
        results["circle_loss"]["recall_at_k"][1]
        - results["raw_pixels"]["recall_at_k"][1]
    )
    report = {
        "data": "packaged Fashion-MNIST subset: train 8,000, held-out test 2,000",
        "results": results,
        "recall_at_1_gain_over_pixels": gain,
        "config": {
            "loss": "CircleLoss(gamma=80, margin=0.4)",
            "p": 10,
            "k": 10,
            "epochs": epochs,
            "steps_per_epoch": steps_per_epoch,
            "embedding_dim": 64,
            "optimizer": "Adam 2e-3 cosine",
        },
        "seconds": {"train": train_seconds, "total": time.time() - start},
        "artifacts": {
            "plots": {k: str(v) for k, v in plot_paths.items()},
            "saved_model": str(saved_model),
            "onnx": str(onnx_path),
        },
    }
    report_path = workdir / "report.json"
    report_path.write_text(json.dumps(report, indent=2, default=float))
    if verbose:
        print(summary(report, report_path))
    return report


def summary(report, report_path):
    """A short text table of the demo's results and where its files are."""
    lines = [
        f"{'embedding':<12} {'R@1':>6} {'R@2':>6} {'R@4':>6} {'R@8':>6} {'MAP@R':>6}"
    ]
    for name, r in report["results"].items():
        recall = r["recall_at_k"]
        row = " ".join(f"{recall[k]:6.3f}" for k in KS)
        lines.append(f"{name:<12} {row} {r['map_at_r']:6.3f}")
    art = report["artifacts"]
    lines += [
        f"Recall@1 gain over raw pixels: {report['recall_at_1_gain_over_pixels']:+.3f}",
        f"time: {report['seconds']['total']:.0f} s",
        f"report:      {report_path}",
        f"plots:       {', '.join(art['plots'].values())}",
        f"SavedModel:  {art['saved_model']}",
        f"ONNX:        {art['onnx']}",
    ]
    return "\n".join(lines)
