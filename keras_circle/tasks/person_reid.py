"""Person re-identification (Market-1501, MSMT17): the recipe.

Top to bottom: the data (the released folders: training identities,
query and gallery with their cameras; or the packaged Fashion-MNIST subset
with stand-in cameras, offline), the model and loss (the configured
backbone's BN-neck embedding under a `CosineProxies` head, with the
class-level Circle loss, gamma 128 and m 0.25 unless the config says
otherwise: `keras_circle.PRESETS`), and the protocol (CMC rank-k and mAP of
each query against the gallery, same-camera matches and junk removed).
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

TASK = "person_reid"


def _fashion_mnist(config):
    task_data = datasets.fashion_mnist(config)
    images, ids, _ = task_data.eval_sets["test"]
    # Stand-in cameras: even indices query, odd gallery, distinct cameras.
    idx = np.arange(len(ids))
    cams = 1 + idx % 2
    query, gallery = idx % 2 == 0, idx % 2 == 1
    task_data.eval_sets = {
        "query": (images[query], ids[query], cams[query]),
        "gallery": (images[gallery], ids[gallery], cams[gallery]),
    }
    return task_data


def _reid_folders(config):
    """The Market-1501 or MSMT17 folders of `data.root`, as released."""
    dc = config.data
    root = data.data_path(dc.root)  # a "builtin:" set is built on first use
    if dc.source == "market1501":
        split = data.load_market1501(root)
    else:
        split = data.load_msmt17(root)
    train = split["train"]
    size = tuple(dc.image_size)
    # Flip, pad-and-crop and random erasing for training (Luo et al. 2019);
    # at test time (and served) a plain resize; pixels in [-1, 1], or the
    # ImageNet convention of the backbone.
    normalization = models.input_normalization(config, "symmetric")
    return TaskData(
        source=data.FileSource(train.paths, train.ids),
        num_classes=train.num_ids,
        preprocess_train=functools.partial(
            data.preprocess_reid, training=True, size=size, normalization=normalization
        ),
        preprocessing=data.reid_spec(size, normalization),
        eval_sets={
            role: (split[role].paths, split[role].ids, split[role].cams)
            for role in ("query", "gallery")
        },
    )


def load_data(config):
    """The re-ID folders of `data.root` (or Fashion-MNIST), as a `TaskData`."""
    loaders = {
        "market1501": _reid_folders,
        "msmt17": _reid_folders,
        "fashion_mnist": _fashion_mnist,
    }
    return datasets.load_source(config, TASK, loaders)


def evaluate(config, embedder, task_data, plot_dir):
    """CMC at ranks `eval.ks` and mAP of the queries against the gallery.

    `eval.flip_test` averages each embedding with its mirror image's;
    `eval.rerank` ranks by the k-reciprocal re-ranked distance (k1 20, k2 6,
    lambda 0.3). Both are off by default.
    """
    q_images, q_ids, q_cams = task_data.eval_sets["query"]
    g_images, g_ids, g_cams = task_data.eval_sets["gallery"]
    ec = config.eval
    q = evaluation.embed(embedder, q_images, task_data, ec.batch_size, ec.flip_test)
    g = evaluation.embed(embedder, g_images, task_data, ec.batch_size, ec.flip_test)
    metrics = retrieval.reid_metrics(
        q, q_ids, q_cams, g, g_ids, g_cams,
        ranks=tuple(ec.ks), curve=True, rerank=ec.rerank,
    )  # fmt: skip
    curve = metrics.pop("cmc_curve")  # the plot's, too long for the report
    if config.eval.plots:
        plots.plot_cmc(curve, plot_dir / "cmc.png", title="CMC (query vs gallery)")
        both, ids = np.concatenate([q, g]), np.concatenate([q_ids, g_ids])
        plots.plot_similarity_histograms(
            both, ids, plot_dir / "similarities.png", margin=config.loss.margin
        )
        evaluation.plot_circle_boundary(config, both, ids, plot_dir)
    return metrics


# Data, model (the BN-neck embedding under a `CosineProxies` head), loss
# (class-level Circle loss unless `loss.name` says otherwise), protocol.
RECIPE = Recipe(TASK, load_data, models.build_models, models.build_loss, evaluate)
