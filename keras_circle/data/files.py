"""Image files to a tf.data pipeline, decoded lazily (TensorFlow only, extra `[tensorflow]`).

Shared by the re-ID and face loaders: they return file lists, this turns a
list into `(image, label)` elements in file order, reading and decoding each
file only when the pipeline reaches it.
"""

import tensorflow as tf

_JPEG, _PNG, _GIF, _BMP = b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"BM"


def _complete(data):
    """True when `data` starts like a JPEG, PNG, GIF or BMP and is not cut short.

    A cheap structural test (no decoding): a JPEG must hold its end marker
    FF D9, a PNG its IEND chunk, a BMP at least the size its header declares;
    a GIF is only checked for its signature.
    Bytes after the end (which the decoders accept) are allowed, so a
    truncated JPEG whose embedded EXIF thumbnail keeps an end marker, or a
    file corrupted in the middle, still passes and fails in the decoder.
    """
    length = tf.strings.length(data)

    def starts(magic):
        return tf.equal(tf.strings.substr(data, 0, len(magic)), magic)

    def holds(marker, start):
        return (
            tf.size(tf.strings.split(tf.strings.substr(data, start, length), marker))
            > 1
        )

    bmp_size = tf.io.decode_raw(
        tf.strings.substr(tf.strings.join([data, b"\0" * 6]), 2, 4), tf.int32
    )[0]
    return tf.case(
        [
            (starts(_JPEG), lambda: holds(b"\xff\xd9", 2)),
            (starts(_PNG), lambda: holds(b"IEND", 8)),
            (starts(_GIF), lambda: length > 13),
            (starts(_BMP), lambda: (length >= 26) & (bmp_size <= length)),
        ],
        default=lambda: tf.constant(False),
    )


def decode_image_file(path, channels=3):
    """Reads and decodes one image file (JPEG, PNG, GIF first frame, BMP).

    The decoders of `tf.io.decode_image` fail without saying which file was
    bad, so the file is first checked for being complete (magic bytes and end marker)
    by an assertion whose message names it: an empty, truncated or non-image
    file stops the pipeline with its path. The check reads no more than the
    bytes already in memory.

    Args:
        path: scalar string tensor, the file path.
        channels: channels to decode to. Defaults to `3`.

    Returns:
        A uint8 image tensor `(height, width, channels)`.
    """
    data = tf.io.read_file(path)
    check = tf.debugging.Assert(
        _complete(data),
        [
            "Corrupt or truncated image file (expected a complete JPEG, PNG, "
            "GIF or BMP):",
            path,
        ],
    )
    with tf.control_dependencies([check]):
        return tf.io.decode_image(data, channels=channels, expand_animations=False)


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
        return decode_image_file(path, channels), label

    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if preprocess is not None:
        ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    if batch_size is not None:
        ds = ds.batch(batch_size)
    return ds.prefetch(tf.data.AUTOTUNE)
