"""Input validation shared by the losses: early, clear errors naming the argument.

Shape problems are caught at trace time. Value problems (fractional labels,
labels out of range, NaN embeddings) are caught eagerly when the values are
known; inside a TensorFlow graph they become `tf.debugging` assertions, which
fail at run time with the same message. Inside a traced JAX function values
cannot be inspected and those checks are skipped.
"""

import math

import keras
import numpy as np
from keras import ops


def check_gamma(gamma, name="gamma"):
    if (
        isinstance(gamma, bool)
        or not isinstance(gamma, (int, float, np.floating, np.integer))
        or not math.isfinite(gamma)
        or gamma <= 0
    ):
        raise ValueError(f"`{name}` must be a finite number > 0; received {gamma!r}.")
    return float(gamma)


def check_margin(margin, name="margin", upper=1.0):
    if (
        isinstance(margin, bool)
        or not isinstance(margin, (int, float, np.floating, np.integer))
        or not 0.0 <= margin < upper
    ):
        raise ValueError(
            f"`{name}` must be a number in [0, {upper:g}); received {margin!r}."
        )
    return float(margin)


def is_concrete(x):
    """True when the values of `x` can be read now (not a symbolic tensor)."""
    if isinstance(x, (np.ndarray, np.generic, list, tuple, int, float)):
        return True
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.executing_eagerly() and hasattr(x, "numpy")
    if backend == "jax":
        import jax

        return not isinstance(x, jax.core.Tracer)
    return True


def _assert(condition, message, values):
    """Raises `ValueError(message)` now, or asserts in a TF graph."""
    if all(is_concrete(v) for v in values):
        if not bool(ops.convert_to_numpy(condition)):
            raise ValueError(message)
        return
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.debugging.Assert(condition, [message])


def static_dim(x, axis):
    dim = x.shape[axis]
    return None if dim is None else int(dim)


def integer_labels(y_true, name="y_true"):
    """Returns the labels as a 1-D integer tensor without any float round trip.

    Accepts any integer dtype, shape `(batch_size,)` or `(batch_size, 1)`.
    Float labels are accepted only if every value is a whole number (they are
    then cast to int64); a fractional value is an error.
    """
    if not hasattr(y_true, "dtype"):
        y_true = np.asarray(y_true)
    rank = len(y_true.shape)
    if rank == 2 and static_dim(y_true, 1) == 1:
        y_true = ops.squeeze(y_true, axis=1)
    elif rank != 1:
        raise ValueError(
            f"`{name}` must hold integer class labels of shape (batch_size,) or "
            f"(batch_size, 1); received shape {tuple(y_true.shape)}."
        )
    dtype = keras.backend.standardize_dtype(y_true.dtype)
    if keras.backend.is_int_dtype(dtype):
        if dtype.startswith("uint"):
            y_true = ops.cast(y_true, "int64")
        return ops.convert_to_tensor(y_true)
    if dtype == "bool":
        return ops.cast(y_true, "int32")
    if not keras.backend.is_float_dtype(dtype):
        raise TypeError(
            f"`{name}` must hold integer class labels; received dtype {dtype}."
        )
    y_true = ops.convert_to_tensor(y_true)
    whole = ops.all(
        ops.logical_and(ops.isfinite(y_true), ops.equal(y_true, ops.round(y_true)))
    )
    _assert(
        whole,
        f"`{name}` must hold integer class labels; received {dtype} values with a "
        "fractional part (or NaN). Pass integer labels: float labels above "
        "2**24 (float32) or 2048 (float16) cannot tell classes apart.",
        [y_true],
    )
    return ops.cast(y_true, "int64")


def float_matrix(y_pred, name="y_pred", what="(batch_size, dim)"):
    """Converts to a float32 rank-2 tensor and checks it is finite."""
    y_pred = ops.convert_to_tensor(y_pred)
    if len(y_pred.shape) != 2:
        raise ValueError(
            f"`{name}` must have shape {what}; received shape {tuple(y_pred.shape)}."
        )
    dtype = keras.backend.standardize_dtype(y_pred.dtype)
    if not keras.backend.is_float_dtype(dtype):
        raise TypeError(f"`{name}` must be a float tensor; received dtype {dtype}.")
    y_pred = ops.cast(y_pred, "float32")
    _assert(
        ops.all(ops.isfinite(y_pred)),
        f"`{name}` contains NaN or infinite values; the loss needs finite inputs.",
        [y_pred],
    )
    return y_pred


def same_batch(labels, y_pred, labels_name="y_true", pred_name="y_pred"):
    """Checks that labels and predictions have the same batch size."""
    n_labels, n_pred = static_dim(labels, 0), static_dim(y_pred, 0)
    if n_labels is not None and n_pred is not None:
        if n_labels != n_pred:
            raise ValueError(
                f"`{labels_name}` and `{pred_name}` must have the same batch size; "
                f"received {n_labels} labels for {n_pred} rows of `{pred_name}`."
            )
        return
    _assert(
        ops.equal(ops.shape(labels)[0], ops.shape(y_pred)[0]),
        f"`{labels_name}` and `{pred_name}` must have the same batch size.",
        [labels, y_pred],
    )


def labels_in_range(labels, num_classes, name="y_true"):
    """Checks 0 <= labels < num_classes (the number of proxies)."""
    if is_concrete(labels) and is_concrete(num_classes):
        values = ops.convert_to_numpy(labels)
        bad = values[(values < 0) | (values >= int(num_classes))]
        if bad.size:
            raise ValueError(
                f"`{name}` must hold class ids in [0, {int(num_classes)}) (the "
                "number of columns of `y_pred`, one per proxy); received "
                f"{bad.size} label(s) outside that range, e.g. {int(bad[0])}."
            )
        return
    ok = ops.logical_and(
        ops.all(ops.greater_equal(labels, 0)),
        ops.all(ops.less(labels, ops.cast(num_classes, labels.dtype))),
    )
    _assert(
        ok,
        f"`{name}` must hold class ids in [0, {num_classes}) (the number of "
        "columns of `y_pred`, one per proxy); received labels outside that range.",
        [labels],
    )
