"""Training batches and evaluation sets per data source (TensorFlow only).

`load_task_data(config)` returns a `TaskData`: a P x K source for training,
the preprocessing of train and test images, and the evaluation sets of the
task's protocol (a retrieval set, a re-ID query/gallery pair, or face
verification pairs).
"""

import dataclasses

import numpy as np
import tensorflow as tf

from keras_circle import data


@dataclasses.dataclass
class TaskData:
    """What a run trains and evaluates on.

    Attributes:
        source: `ArraySource` / `FileSource` / `TfdsSource` for `pk_batches`.
        num_classes: Training classes (for the proxies of class-level losses).
        preprocess_train: `(image, label) -> (image, label)` with augmentation.
        preprocess_test: The same without augmentation.
        scale: Pixel scaling of the model input, for the exported bytes
            signature (`"zero_one"` or `"minus_one_to_one"`).
        eval_sets: Dict of evaluation inputs, keyed by role: `"test"`
            (retrieval/faces), `"query"` and `"gallery"` (re-ID), each
            `(images_or_paths, labels, cams_or_None)`; `"pairs"` for faces.
    """

    source: object
    num_classes: int
    preprocess_train: object
    preprocess_test: object
    scale: str
    eval_sets: dict


def _array_preprocess(size, channels):
    def fn(image, label):
        image = tf.cast(image, tf.float32) / 255.0
        if image.shape.rank == 2:
            image = image[..., None]
        if tuple(image.shape[:2]) != tuple(size):
            image = tf.image.resize(image, size)
        if channels == 3 and image.shape[-1] == 1:
            image = tf.repeat(image, 3, axis=-1)
        return image, label

    return fn


def _limit(n, *arrays):
    return tuple(a[:n] if n else a for a in arrays)


def _fashion_mnist(config):
    dc = config.data
    (x_train, y_train), (x_test, y_test), _ = data.load_fashion_mnist_subset()
    if dc.split == "classes":
        # Zero-shot: train on classes 0-4, retrieve among unseen 5-9.
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
    fn = _array_preprocess(tuple(dc.image_size), dc.channels)
    eval_sets = {"test": (x_test, y_test, None)}
    if config.task == "person_reid":
        # Stand-in cameras: even indices query, odd gallery, distinct cameras.
        idx = np.arange(len(y_test))
        cams = 1 + idx % 2
        eval_sets = {
            "query": (x_test[idx % 2 == 0], y_test[idx % 2 == 0], cams[idx % 2 == 0]),
            "gallery": (x_test[idx % 2 == 1], y_test[idx % 2 == 1], cams[idx % 2 == 1]),
        }
    return TaskData(
        data.ArraySource(x_train, y_train.astype(np.int32)),
        len(classes),
        fn,
        fn,
        "zero_one",
        eval_sets,
    )


def _reid(config):
    dc = config.data
    loader = data.load_market1501 if dc.source == "market1501" else data.load_msmt17
    split = loader(dc.root)
    train = split["train"]
    size = tuple(dc.image_size)

    def prep(training):
        return lambda image, label: data.preprocess_reid(
            image, label, training=training, size=size, normalization="symmetric"
        )

    eval_sets = {
        role: (split[role].paths, split[role].ids, split[role].cams)
        for role in ("query", "gallery")
    }
    return TaskData(
        data.FileSource(train.paths, train.ids),
        train.num_ids,
        prep(True),
        prep(False),
        "minus_one_to_one",
        eval_sets,
    )


def _faces(config):
    dc = config.data
    paths, labels, names = data.load_identity_folders(dc.root)
    if not dc.lfw_pairs:
        raise ValueError(
            "`data.source='identity_folders'` evaluates on LFW pairs: set "
            "`data.lfw_pairs` (pairs.txt) and `data.lfw_root`."
        )
    pairs = data.load_lfw_pairs(dc.lfw_pairs, dc.lfw_root or dc.root)
    size = tuple(dc.image_size)

    def prep(training):
        return lambda image, label: data.preprocess_face(
            image, label, training=training, size=size
        )

    return TaskData(
        data.FileSource(paths, labels),
        len(names),
        prep(True),
        prep(False),
        "minus_one_to_one",
        {"pairs": pairs},
    )


def _tfds(config):
    dc = config.data
    train = data.load_fine_grained(dc.name, "train", data_dir=dc.tfds_data_dir)
    test = data.load_fine_grained(dc.name, "test", data_dir=dc.tfds_data_dir)
    source = data.TfdsSource(train)
    test_source = data.TfdsSource(test)
    classes, labels = np.unique(source.labels, return_inverse=True)
    source.labels = labels
    size = dc.image_size[0]

    def prep(training):
        return lambda image, label: data.preprocess_fine_grained(
            image, label, training=training, size=size, normalization="symmetric"
        )

    return TaskData(
        source,
        len(classes),
        prep(True),
        prep(False),
        "minus_one_to_one",
        {"test": (test_source, test_source.labels, None)},
    )


def load_task_data(config):
    """The `TaskData` of `config.data.source` for `config.task`."""
    loaders = {
        "fashion_mnist": _fashion_mnist,
        "market1501": _reid,
        "msmt17": _reid,
        "identity_folders": _faces,
        "tfds": _tfds,
    }
    return loaders[config.data.source](config)


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
