"""Class-balanced P x K batches for pair-wise losses (TensorFlow only, extra `[tensorflow]`).

A batch holds `p` classes with `k` samples each, so every anchor has `k - 1`
positives and `(p - 1) * k` negatives: what `CircleLoss` and the other
pair-wise losses need. The (class, index) plan of each epoch is drawn by a
seeded NumPy generator (`numpy.random.default_rng([seed, epoch])`), so a run is
reproducible and any epoch can be rebuilt on its own; images are fetched and
decoded only after sampling, one element at a time.

Three kinds of source feed it: `ArraySource` (in-memory arrays),
`FileSource` (image files decoded lazily) and `TfdsSource` (a TFDS split read
once with its images left encoded).
"""

import numpy as np
import tensorflow as tf

from keras_circle import _checks
from keras_circle.data.files import decode_image_file


def _decode_image(data, channels):
    return tf.io.decode_image(data, channels=channels, expand_animations=False)


class ArraySource:
    """In-memory arrays `x` and `labels` for `pk_batches`.

    Args:
        x: array `(num_samples, ...)`, e.g. uint8 images.
        labels: integer array `(num_samples,)`.

    Example:

    >>> src = keras_circle.data.ArraySource(np.zeros((8, 4, 4)), [0, 0, 1, 1] * 2)
    """

    def __init__(self, x, labels):
        self.x = np.asarray(x)
        self.labels = np.asarray(labels).reshape(-1)
        if len(self.x) != len(self.labels):
            raise ValueError(
                f"`x` and `labels` differ in length: {len(self.x)} vs "
                f"{len(self.labels)}."
            )

    def load(self, index):
        # The constant is made lazily, inside the graph that uses it.
        return tf.gather(tf.constant(self.x), index)


class FileSource:
    """Image files with labels for `pk_batches`, decoded only when sampled.

    Only the paths and labels stay in memory; each sampled file is read and
    decoded by `decode_fn` inside the tf.data pipeline.

    Args:
        paths: sequence of file paths `(num_samples,)`.
        labels: integer array `(num_samples,)`.
        decode_fn: maps the file contents (a scalar string tensor) to an
            image tensor. Defaults to `None`:
            `keras_circle.data.decode_image_file` with `channels` channels
            (JPEG, PNG, GIF first frame, BMP), whose error for an empty,
            truncated or non-image file names the file.
        channels: channels of the default decoder. Defaults to `3`.
    """

    def __init__(self, paths, labels, *, decode_fn=None, channels=3):
        self.paths = np.asarray([str(p) for p in paths])
        self.labels = np.asarray(labels).reshape(-1)
        if len(self.paths) != len(self.labels):
            raise ValueError(
                f"`paths` and `labels` differ in length: {len(self.paths)} vs "
                f"{len(self.labels)}."
            )
        self.decode_fn = decode_fn
        self.channels = channels

    def load(self, index):
        path = tf.gather(self.paths, index)
        if self.decode_fn is None:
            return decode_image_file(path, self.channels)
        return self.decode_fn(tf.io.read_file(path))


class TfdsSource:
    """A TFDS split (a `tf.data.Dataset` of dicts) for `pk_batches`.

    The dataset is read once, keeping each label and the *encoded* image
    bytes: load it with `decoders={image_key: tfds.decode.SkipDecoding()}` so
    that no image is decoded in that pass. The sampled images are decoded in
    the pipeline. A tf.data dataset has no random access, so the encoded
    bytes (the size of the JPEG files) stay in memory; for sets too large for
    that, export the files and use `FileSource` (TensorFlow also caps a
    tensor captured by a tf.data graph at 2 GB: fine for CUB, about 1.1 GB of
    JPEGs; use files for SOP). A dataset whose image
    feature is already decoded (uint8) is accepted too and then kept as is.

    Args:
        dataset: `tf.data.Dataset` of dicts, e.g. from `tfds.load`.
        image_key: key of the image feature. Defaults to `"image"`.
        label_key: key of the integer label feature. Defaults to `"label"`.
        channels: channels of the decoded images. Defaults to `3`.
    """

    def __init__(self, dataset, *, image_key="image", label_key="label", channels=3):
        spec = dataset.element_spec
        for name, key in [("image_key", image_key), ("label_key", label_key)]:
            if key not in spec:
                raise ValueError(
                    f"`{name}`={key!r} is not a feature of the dataset; "
                    f"features: {sorted(spec)}."
                )
        self.encoded = spec[image_key].dtype == tf.string
        pairs = dataset.map(lambda ex: (ex[image_key], ex[label_key]))
        images, labels = [], []
        for image, label in pairs.as_numpy_iterator():
            images.append(image)
            labels.append(label)
        self.labels = np.asarray(labels).reshape(-1)
        self.images = np.asarray(images, dtype=object if self.encoded else None)
        self.channels = channels

    def load(self, index):
        image = tf.gather(tf.constant(self.images), index)
        return _decode_image(image, self.channels) if self.encoded else image


def _check_stream_args(seed, epochs):
    """Checked when the dataset is built: inside the pipeline a bad seed
    would only fail on the first batch, deep inside tf.data."""
    _checks.check_integer(seed, "seed", minimum=0)
    _checks.check_integer(epochs, "epochs", none="to repeat endlessly")


def _check_args(labels, p, k, replicas=1):
    for name, value in [("p", p), ("k", k)]:
        if not isinstance(value, (int, np.integer)) or value < 2:
            reason = "negatives" if name == "p" else "positives"
            raise ValueError(
                f"`{name}` must be an integer >= 2 (pair-wise losses need "
                f"{reason}); got {name}={value!r}."
            )
    num_classes = len(np.unique(labels))
    if p > num_classes:
        raise ValueError(
            f"`p`={p} is larger than the number of classes in the source "
            f"({num_classes})."
        )
    if p % replicas:
        raise ValueError(
            f"`p`={p} must be a multiple of the number of replicas "
            f"({replicas}) so that every replica holds whole classes."
        )


def epoch_plan(labels, p, k, *, seed, epoch, steps):
    """Indices of one epoch of P x K batches, as a `(steps, p * k)` array.

    Classes are visited in a random order without repetition (a new order
    each pass over the classes), so all classes appear equally often; each
    class gives `k` distinct samples, drawn with replacement only when it has
    fewer than `k`. Row `s` lists class after class: `k` indices of the
    first class, then `k` of the second, and so on.

    Args:
        labels: integer array `(num_samples,)`.
        p: classes per batch.
        k: samples per class.
        seed: integer seed.
        epoch: epoch number, mixed into the seed.
        steps: number of batches.

    Returns:
        int64 array `(steps, p * k)` of sample indices.
    """
    labels = np.asarray(labels).reshape(-1)
    rng = np.random.default_rng([int(seed), int(epoch)])
    classes, inverse = np.unique(labels, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(classes))
    members = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    order = np.empty(0, dtype=np.int64)
    plan = np.empty((steps, p * k), dtype=np.int64)
    for step in range(steps):
        if len(order) < p:
            # Top up with a fresh permutation, never repeating a class
            # inside one batch.
            fresh = rng.permutation(len(classes))
            fresh = np.concatenate(
                [fresh[~np.isin(fresh, order)], fresh[np.isin(fresh, order)]]
            )
            order = np.concatenate([order, fresh])
        chosen, order = order[:p], order[p:]
        for j, c in enumerate(chosen):
            m = members[c]
            plan[step, j * k : (j + 1) * k] = rng.choice(m, k, replace=len(m) < k)
    return plan


def _index_stream(labels, p, k, seed, steps, epochs, shard):
    """Dataset of per-step index vectors; `shard` = (first, size) columns."""
    first, size = shard

    def plan_of(epoch):
        plan = epoch_plan(labels, p, k, seed=seed, epoch=epoch, steps=steps)
        return plan[:, first : first + size]

    epoch_ds = (
        tf.data.Dataset.counter() if epochs is None else tf.data.Dataset.range(epochs)
    )
    return epoch_ds.flat_map(
        lambda e: tf.data.Dataset.from_tensor_slices(
            tf.ensure_shape(
                tf.numpy_function(plan_of, [e], tf.int64, stateful=False),
                (steps, size),
            )
        )
    )


def _build(source, p, k, seed, preprocess, steps, epochs, shard, batch):
    labels = tf.constant(source.labels)
    rows = _index_stream(source.labels, p, k, seed, steps, epochs, shard)
    ds = rows.unbatch().map(
        lambda i: (source.load(i), tf.gather(labels, i)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    if preprocess is not None:
        ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch, drop_remainder=True)
    # flat_map/unbatch lose the count; Keras wants it (progress bars, and
    # an endless dataset must say so to need `steps_per_epoch`).
    count = (
        tf.data.INFINITE_CARDINALITY
        if epochs is None
        else epochs * steps * (shard[1] // batch)
    )
    ds = ds.apply(tf.data.experimental.assert_cardinality(count))
    return ds.prefetch(tf.data.AUTOTUNE)


def _steps(source, p, k, steps_per_epoch):
    if steps_per_epoch is None:
        steps_per_epoch = len(source.labels) // (p * k)
    if steps_per_epoch < 1:
        raise ValueError(
            f"`steps_per_epoch` must be >= 1; got {steps_per_epoch} (the "
            f"default is num_samples // (p * k) = {len(source.labels)} // {p * k})."
        )
    return int(steps_per_epoch)


def pk_batches(
    source, p, k, *, seed, preprocess=None, epochs=None, steps_per_epoch=None
):
    """Global P x K batches as a `tf.data.Dataset` of `(images, labels)`.

    Each batch holds `p` distinct classes with `k` samples each, class after
    class (`labels[j * k:(j + 1) * k]` is one class). An epoch is
    `steps_per_epoch` batches; epoch `e` is drawn with the seed `[seed, e]`,
    so the stream is the same on every run and on every worker.

    For `tf.distribute`, pass the dataset to
    `strategy.experimental_distribute_dataset`: it splits each global batch
    of `p * k` into consecutive per-replica slices (with `p` a multiple of
    the number of replicas each replica holds whole classes), and under
    `MultiWorkerMirroredStrategy` its data sharding gives each worker
    different batches of the same seeded stream. `pk_dataset_fn` is the
    variant for `distribute_datasets_from_function`.

    Args:
        source: an `ArraySource`, `FileSource` or `TfdsSource`.
        p: classes per batch, at least 2 (pair-wise losses need negatives)
            and at most the number of classes.
        k: samples per class, at least 2 (anchors need a positive). Classes
            with fewer than `k` samples are drawn with replacement.
        seed: non-negative integer seed of the sampling.
        preprocess: function `(image, label) -> (image, label)` mapped on
            each sample after sampling, e.g. from
            `keras_circle.data.preprocessing`. Defaults to `None`.
        epochs: positive number of epochs; `None` repeats endlessly (use
            `steps_per_epoch` in `fit`). Defaults to `None`.
        steps_per_epoch: batches per epoch. Defaults to `None`:
            `num_samples // (p * k)`.

    Returns:
        A `tf.data.Dataset` of `(images, labels)` batches of `p * k`.

    Example:

    >>> src = keras_circle.data.ArraySource(x_train, y_train)
    >>> ds = keras_circle.data.pk_batches(src, p=16, k=5, seed=0, epochs=1)
    """
    _check_args(source.labels, p, k)
    _check_stream_args(seed, epochs)
    steps = _steps(source, p, k, steps_per_epoch)
    return _build(source, p, k, seed, preprocess, steps, epochs, (0, p * k), p * k)


def pk_dataset_fn(
    source, p, k, *, seed, preprocess=None, epochs=None, steps_per_epoch=None
):
    """`pk_batches` for `strategy.distribute_datasets_from_function`.

    Returns a `dataset_fn(input_context)`. Every input pipeline draws the
    same seeded global plan and keeps only its own replicas' share: with `R`
    replicas in sync, each replica gets `p / R` whole classes per step
    (`p * k / R` samples), and pipeline `i` emits, step after step, the
    slices of its `R / num_input_pipelines` local replicas. Together the
    replicas see each global P x K batch exactly once, with nothing
    duplicated across workers. `p` must be a multiple of `R`.

    Args:
        source, p, k, seed, preprocess, epochs, steps_per_epoch: as in
            `pk_batches`.

    Returns:
        A function `input_context -> tf.data.Dataset` of per-replica
        `(images, labels)` batches of `p * k / R`.

    Example:

    >>> fn = keras_circle.data.pk_dataset_fn(src, p=16, k=5, seed=0)
    >>> dist = strategy.distribute_datasets_from_function(fn)
    """
    _check_stream_args(seed, epochs)
    steps = _steps(source, p, k, steps_per_epoch)

    def dataset_fn(input_context):
        replicas = input_context.num_replicas_in_sync
        pipelines = input_context.num_input_pipelines
        _check_args(source.labels, p, k, replicas)
        if replicas % pipelines:
            raise ValueError(
                f"{replicas} replicas cannot be split evenly over {pipelines} "
                "input pipelines."
            )
        per_replica = p * k // replicas
        local = replicas // pipelines
        shard = (
            input_context.input_pipeline_id * local * per_replica,
            local * per_replica,
        )
        return _build(source, p, k, seed, preprocess, steps, epochs, shard, per_replica)

    return dataset_fn
