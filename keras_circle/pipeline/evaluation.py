"""TensorFlow-only: each family's evaluation protocol, plots, report, export.

Fine-grained retrieval: Recall@K, MAP@R and precision@1 within the test set
(unseen classes with `data.split="classes"`). Person re-ID: CMC and mAP of
queries against the gallery, same-camera matches removed. Faces: 10-fold
verification accuracy and TAR at FAR on pairs (LFW's, or drawn from the test
identities).
"""

import json

import numpy as np

from keras_circle import data
from keras_circle import plots
from keras_circle import retrieval
from keras_circle.pipeline.datasets import image_dataset


def embed(embedder, items, task, batch_size):
    """Embeddings of test images (arrays, file paths or a TFDS source)."""
    ds = image_dataset(items, task.preprocess_test, batch_size)
    return np.asarray(embedder.predict(ds, verbose=0), dtype=np.float32)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _retrieval(config, embedder, task, plot_dir):
    images, labels, _ = task.eval_sets["test"]
    x = embed(embedder, images, task, config.eval.batch_size)
    recall = retrieval.recall_at_k(x, labels, ks=config.eval.ks, verbose=0)
    metrics = {
        "recall_at_k": recall,
        "map_at_r": retrieval.map_at_r(x, labels, verbose=0),
        "precision_at_1": recall.get(1),
    }
    if config.eval.plots:
        plots.plot_recall_at_k({"model": recall}, plot_dir / "recall_at_k.png")
        plots.plot_similarity_histograms(
            x, labels, plot_dir / "similarities.png", margin=config.loss.margin
        )
    return metrics


def _reid(config, embedder, task, plot_dir):
    q_images, q_ids, q_cams = task.eval_sets["query"]
    g_images, g_ids, g_cams = task.eval_sets["gallery"]
    q = embed(embedder, q_images, task, config.eval.batch_size)
    g = embed(embedder, g_images, task, config.eval.batch_size)
    metrics = retrieval.reid_metrics(
        q, q_ids, q_cams, g, g_ids, g_cams, ranks=tuple(config.eval.ks)
    )
    if config.eval.plots:
        plots.plot_similarity_histograms(
            np.concatenate([q, g]),
            np.concatenate([q_ids, g_ids]),
            plot_dir / "similarities.png",
            margin=config.loss.margin,
        )
    return metrics


def _faces(config, embedder, task, plot_dir):
    size = config.eval.batch_size
    if "pairs" in task.eval_sets:
        pairs = task.eval_sets["pairs"]
        a = embed(embedder, np.asarray(pairs["paths_a"]), task, size)
        b = embed(embedder, np.asarray(pairs["paths_b"]), task, size)
        is_same = pairs["is_same"]
    else:
        images, labels, _ = task.eval_sets["test"]
        # Identity-disjoint folds need two identities each (10 as LFW when
        # there are enough).
        folds = max(2, min(10, len(np.unique(labels)) // 2))
        per_fold = max(10, min(300, len(labels) // (4 * folds)))
        pairs = data.sample_verification_pairs(
            labels, num_folds=folds, pairs_per_fold=per_fold
        )
        x = embed(embedder, images, task, size)
        a, b, is_same = x[pairs["index_a"]], x[pairs["index_b"]], pairs["is_same"]
    folds = int(np.max(pairs["folds"])) + 1
    metrics = retrieval.verification_metrics(a, b, is_same, folds=folds)
    roc = metrics.pop("roc")
    if config.eval.plots:
        plots.plot_roc(roc["fpr"], roc["tpr"], plot_dir / "roc.png", auc=metrics["auc"])
    return metrics


PROTOCOLS = {
    "fine_grained_retrieval": _retrieval,
    "person_reid": _reid,
    "face_recognition": _faces,
}


def _plot_history(workdir, plot_dir):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    lines = (
        (workdir / "history.csv").read_text().split()
        if (workdir / "history.csv").exists()
        else []
    )
    if len(lines) < 2:
        return
    header = lines[0].split(",")
    column = header.index("loss")
    losses = [float(row.split(",")[column]) for row in lines[1:]]
    figure, axes = plt.subplots(figsize=(5.5, 4))
    axes.plot(range(1, len(losses) + 1), losses, marker="o")
    axes.set_xlabel("round (backup interval)")
    axes.set_ylabel("training loss")
    figure.tight_layout()
    figure.savefig(plot_dir / "loss.png", dpi=100)
    plt.close(figure)


def evaluate_and_report(config, workdir, embedder, task, out_dir=None):
    """Runs the task's protocol; returns the report dict (not yet written).

    Plots go to `out_dir/plots` (`out_dir` defaults to `workdir`).
    """
    from keras_circle import config as config_lib

    plot_dir = (out_dir or workdir) / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    metrics = PROTOCOLS[config.task](config, embedder, task, plot_dir)
    if config.eval.plots:
        _plot_history(workdir, plot_dir)
    return {
        "task": config.task,
        "metrics": _jsonable(metrics),
        "config": config_lib.to_dict(config),
        "artifacts": {
            "model": str(workdir / "model.keras"),
            "plots": sorted(str(p) for p in plot_dir.glob("*.png")),
        },
    }


def export_embedder(config, workdir, embedder, task):
    """Exports the embedder as asked by `config.eval`; returns the paths."""
    from keras_circle import export

    out = {}
    preprocessing = {"scale": task.scale}
    verbose = config.train.verbose > 0
    if config.eval.export_saved_model:
        out["saved_model"] = str(
            export.export_saved_model(
                embedder,
                workdir / "export" / "saved_model",
                preprocessing=preprocessing,
                progress=verbose,
            )
        )
    if config.eval.export_onnx:
        out["onnx"] = str(
            export.export_onnx(
                embedder,
                workdir / "export" / "embedder.onnx",
                preprocessing=preprocessing,
                progress=verbose,
            )
        )
    return out


def write_report(workdir, report):
    """Writes `report.json` atomically (a killed run never leaves half a file)."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "report.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_jsonable(report), indent=2))
    tmp.replace(path)
    return path
