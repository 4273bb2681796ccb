"""Fine-grained retrieval (CUB-200-2011, Cars196, SOP): the recipe.

Top to bottom: the data (a TFDS set, trained on its train split and
retrieved within its test split; or the packaged Fashion-MNIST subset,
offline), the model and loss (the configured backbone's embedding trained
on P x K batches with the pair-wise Circle loss, gamma 80 and m 0.4 unless
the config says otherwise: `keras_circle.PRESETS`), and the protocol
(Recall@K, MAP@R and precision@1 within the test set; unseen classes with
`data.split="classes"`).
"""

import functools

import numpy as np

from keras_circle import data
from keras_circle import plots
from keras_circle import retrieval
from keras_circle.pipeline import datasets
from keras_circle.pipeline import evaluation
from keras_circle.pipeline import models
from keras_circle.pipeline.recipe import Recipe
from keras_circle.pipeline.recipe import TaskData

TASK = "fine_grained_retrieval"


def _tfds(config):
    """The TFDS set `data.name`: train classes, and unseen test classes."""
    dc = config.data
    train = data.load_fine_grained(dc.name, "train", data_dir=dc.tfds_data_dir)
    test = data.load_fine_grained(dc.name, "test", data_dir=dc.tfds_data_dir)
    source = data.TfdsSource(train)
    test_source = data.TfdsSource(test)
    classes, source.labels = np.unique(source.labels, return_inverse=True)
    size = dc.image_size[0]
    # Inception-style random crops for training; at test time (and served)
    # the shorter side is resized to 256 and the centre size x size cut out.
    # Pixels in [-1, 1], or the ImageNet convention of the backbone.
    normalization = models.input_normalization(config, "symmetric")
    return TaskData(
        source=source,
        num_classes=len(classes),
        preprocess_train=functools.partial(
            data.preprocess_fine_grained,
            training=True,
            size=size,
            normalization=normalization,
        ),
        preprocessing=data.fine_grained_spec(size, normalization=normalization),
        eval_sets={"test": (test_source, test_source.labels, None)},
    )


def load_data(config):
    """The TFDS set `data.name` (or Fashion-MNIST), as a `TaskData`."""
    loaders = {"tfds": _tfds, "fashion_mnist": datasets.fashion_mnist}
    return datasets.load_source(config, TASK, loaders)


def evaluate(config, embedder, task_data, plot_dir):
    """Recall@K, MAP@R and precision@1 of each test image against the rest."""
    images, labels, _ = task_data.eval_sets["test"]
    x = evaluation.embed(embedder, images, task_data, config.eval.batch_size)
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
        evaluation.plot_circle_boundary(config, x, labels, plot_dir)
    return metrics


# Data, model (the embedding itself for pair labels), loss (pair-wise Circle
# loss unless `loss.name` says otherwise), protocol.
RECIPE = Recipe(TASK, load_data, models.build_models, models.build_loss, evaluate)
