"""Image files to a tf.data pipeline, decoded lazily (TensorFlow only: tf.data).

Shared by the re-ID and face loaders: they return file lists, this turns a
list into `(image, label)` elements in file order, reading and decoding each
file only when the pipeline reaches it.
"""

import tensorflow as tf


def files_dataset(paths, labels, *, preprocess=None, batch_size=None, channels=3):
    """`tf.data.Dataset` of `(image, label)` from files, in the given order.

    The order is kept (no shuffling), so embeddings computed from it line up
    with `labels` and any other per-file array (cameras, folds).

    Args:
        paths: sequence of image file paths.
        labels: integer sequence, one per path.
        preprocess: function `(image, label) -> (image, label)` applied after
            decoding, e.g. `keras_circle.data.preprocess_reid`. Defaults to
            `None`: uint8 images `(height, width, channels)`.
        batch_size: batch the elements (the last batch may be smaller).
            Defaults to `None`: no batching.
        channels: channels to decode to. Defaults to `3`.

    Returns:
        A `tf.data.Dataset` of `(image, label)`.

    Example:

    >>> ds = keras_circle.data.files_dataset(split.paths, split.ids)
    """
    paths = [str(p) for p in paths]
    if len(paths) != len(labels):
        raise ValueError(
            f"`paths` and `labels` differ in length: {len(paths)} vs {len(labels)}."
        )

    def load(path, label):
        data = tf.io.read_file(path)
        image = tf.io.decode_image(data, channels=channels, expand_animations=False)
        return image, label

    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if preprocess is not None:
        ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    if batch_size is not None:
        ds = ds.batch(batch_size)
    return ds.prefetch(tf.data.AUTOTUNE)
