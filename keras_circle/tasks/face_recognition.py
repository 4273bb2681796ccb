"""Face recognition (MS1M-style identity folders, LFW pairs): the recipe.

Top to bottom: the data (`root/<identity>/<image>` folders for training
and LFW's `pairs.txt` for verification; or the packaged Fashion-MNIST
subset, whose verification pairs are drawn from the test classes), the
model and loss (the configured backbone's embedding under a
`CosineProxies` head, with the class-level Circle loss, gamma 256 and
m 0.25 unless the config says otherwise: `keras_circle.PRESETS`), and the
protocol (10-fold verification accuracy, TAR at FAR and ROC AUC).
"""

import functools

import numpy as np

from keras_circle import data
from keras_circle import plots
from keras_circle import retrieval
from keras_circle.config import ConfigError
from keras_circle.pipeline import datasets
from keras_circle.pipeline import evaluation
from keras_circle.pipeline import models
from keras_circle.pipeline.recipe import Recipe
from keras_circle.pipeline.recipe import TaskData

TASK = "face_recognition"


def _identity_folders(config):
    """Identity folders of `data.root`, evaluated on LFW pairs."""
    dc = config.data
    # "builtin:" paths name the small offline set, built on first use.
    paths, labels, names = data.load_identity_folders(data.data_path(dc.root))
    if not dc.lfw_pairs:
        raise ConfigError(
            "`data.source='identity_folders'` evaluates on LFW pairs: set "
            "`data.lfw_pairs` (pairs.txt) and `data.lfw_root`."
        )
    pairs = data.load_lfw_pairs(
        data.data_path(dc.lfw_pairs), data.data_path(dc.lfw_root or dc.root)
    )
    size = tuple(dc.image_size)
    # Aligned crops: resized, flipped at random for training; [-1, 1], or
    # the ImageNet convention of the backbone.
    normalization = models.input_normalization(config, "symmetric")
    return TaskData(
        source=data.FileSource(paths, labels),
        num_classes=len(names),
        preprocess_train=functools.partial(
            data.preprocess_face, training=True, size=size, normalization=normalization
        ),
        preprocessing=data.face_spec(size, normalization),
        eval_sets={"pairs": pairs},
    )


def load_data(config):
    """Identity folders and LFW pairs (or Fashion-MNIST), as a `TaskData`."""
    loaders = {
        "identity_folders": _identity_folders,
        "fashion_mnist": datasets.fashion_mnist,
    }
    return datasets.load_source(config, TASK, loaders)


def _test_pairs(config, embedder, task_data, plot_dir):
    """Embeddings of pairs drawn from the test identities (no LFW pairs)."""
    images, labels, _ = task_data.eval_sets["test"]
    # Identity-disjoint folds need two identities each (10 as LFW when there
    # are enough).
    folds = max(2, min(10, len(np.unique(labels)) // 2))
    per_fold = max(10, min(300, len(labels) // (4 * folds)))
    pairs = data.sample_verification_pairs(
        labels, num_folds=folds, pairs_per_fold=per_fold
    )
    x = evaluation.embed(embedder, images, task_data, config.eval.batch_size)
    if config.eval.plots:
        evaluation.plot_circle_boundary(config, x, labels, plot_dir)
    return x[pairs["index_a"]], x[pairs["index_b"]], pairs


def evaluate(config, embedder, task_data, plot_dir):
    """Verification accuracy (k-fold), TAR at FAR and ROC AUC on pairs."""
    if "pairs" in task_data.eval_sets:
        pairs = task_data.eval_sets["pairs"]
        size = config.eval.batch_size
        a = evaluation.embed(embedder, np.asarray(pairs["paths_a"]), task_data, size)
        b = evaluation.embed(embedder, np.asarray(pairs["paths_b"]), task_data, size)
    else:
        a, b, pairs = _test_pairs(config, embedder, task_data, plot_dir)
    folds = int(np.max(pairs["folds"])) + 1
    metrics = retrieval.verification_metrics(a, b, pairs["is_same"], folds=folds)
    roc = metrics.pop("roc")
    if config.eval.plots:
        plots.plot_roc(roc["fpr"], roc["tpr"], plot_dir / "roc.png", auc=metrics["auc"])
    return metrics


# Data, model (the embedding under a `CosineProxies` head), loss (class-level
# Circle loss unless `loss.name` says otherwise), protocol.
RECIPE = Recipe(TASK, load_data, models.build_models, models.build_loss, evaluate)
