"""Data every recipe can share (TensorFlow only).

`load_source(config, task, loaders)`: the `TaskData` of `data.source` from
a recipe's table of loaders; `fashion_mnist(config)`: the packaged
Fashion-MNIST subset as a `TaskData` (offline runs of any family: tests, the
demo); and `image_dataset`: batches of test images for evaluation, from
arrays, file paths or a TFDS source.
"""

import numpy as np
import tensorflow as tf

from keras_circle import data
from keras_circle.config import ConfigError
from keras_circle.pipeline import models
from keras_circle.pipeline.recipe import TaskData


def _limit(n, *arrays):
    return tuple(a[:n] if n else a for a in arrays)


def fashion_mnist(config):
    """The packaged Fashion-MNIST subset, with one evaluation set `"test"`.

    `data.split="classes"` trains on classes 0-4 and tests on the unseen
    5-9 (zero-shot); `"official"` keeps the official splits. The test set is
    `(images, labels, None)`; a recipe reshapes it to its protocol's roles.
    """
    dc = config.data
    (x_train, y_train), (x_test, y_test), _ = data.load_fashion_mnist_subset()
    if dc.split == "classes":
        keep = y_train < 5
        x_train, y_train = x_train[keep], y_train[keep]
        keep = y_test >= 5
        x_test, y_test = x_test[keep], y_test[keep]
    rng = np.random.default_rng(dc.max_test_images)
    if dc.max_test_images:
        order = rng.permutation(len(y_test))[: dc.max_test_images]
        x_test, y_test = x_test[order], y_test[order]
    x_train, y_train = _limit(dc.max_train_images, x_train, y_train)
    classes, y_train = np.unique(y_train, return_inverse=True)
    # Pixels in [0, 1] (or the ImageNet convention of the backbone), resized
    # (and grey repeated) to the model input; no augmentation, so training
    # sees the test-time path too.
    spec = data.make_spec(
        list(dc.image_size),
        channels=dc.channels,
        normalization=models.input_normalization(config, "zero_one"),
    )
    return TaskData(
        source=data.ArraySource(x_train, y_train.astype(np.int32)),
        num_classes=len(classes),
        preprocess_train=data.test_time_preprocess(spec),
        preprocessing=spec,
        eval_sets={"test": (x_test, y_test, None)},
    )


def image_dataset(items, preprocess, batch_size):
    """Batches of preprocessed test images from arrays, paths or a source."""
    if isinstance(items, data.TfdsSource):
        index = tf.data.Dataset.range(len(items.labels))
        ds = index.map(lambda i: (items.load(i), tf.constant(0)))
    elif isinstance(items, np.ndarray) and items.dtype.kind in "US":
        ds = data.files_dataset(items, np.zeros(len(items), np.int64))
    else:
        ds = tf.data.Dataset.from_tensor_slices((items, np.zeros(len(items))))
    ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.map(lambda x, y: x).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def load_source(config, task, loaders):
    """The `TaskData` of `data.source`, loaded by the recipe of `task`.

    Args:
        config: A `keras_circle.config.Config`.
        task: The recipe's task, named in the error.
        loaders: `{source: loader}`, every data set the recipe loads, each
            loader `config -> TaskData`.

    Raises:
        ConfigError: naming the source, the task and the sources it loads.
    """
    source = config.data.source
    if source not in loaders:
        raise ConfigError(
            f"`data.source` {source!r} is not a data set of task "
            f"{task!r}; its recipe loads {list(loaders)}."
        )
    return loaders[source](config)
