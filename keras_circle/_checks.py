"""Input validation shared by the losses: early, clear errors naming the argument.

Shape problems are caught at trace time. Value problems (fractional labels,
labels out of range, NaN embeddings) are caught eagerly when the values are
known; inside a plain TensorFlow graph they become `tf.debugging` assertions,
which fail at run time with the same message.

XLA drops those assertions and a traced JAX function cannot raise, so a value
check also returns a *poison factor*: a float32 scalar that is 1 when the check
holds and NaN when it fails (`None` when the values were checked eagerly). The
losses multiply their input and their output by it (`poison`), so a failed
check gives a NaN loss and NaN gradients, which `keras.callbacks.TerminateOnNaN`
and every other NaN guard see, never a normal-looking value. A factor of 1
changes no value and no gradient.
"""

import math
import numbers

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
    if backend == "torch":
        # Keras infers output shapes (`compute_output_spec`, the trainer's
        # symbolic build) on tensors of PyTorch's "meta" device: shapes
        # without values. A check read there would fail on made-up data.
        return not getattr(x, "is_meta", False)
    return True


def check_value(condition, message, values):
    """Raises `ValueError(message)` now, or asserts in a TF graph and poisons.

    Returns:
        `None` when the values were concrete (checked here), else the poison
        factor of `condition`: float32 1 where it holds, NaN where not.
    """
    if all(is_concrete(v) for v in values):
        if not bool(ops.convert_to_numpy(condition)):
            raise ValueError(message)
        return None
    factor = ops.where(condition, 1.0, float("nan"))
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        check = tf.debugging.Assert(condition, [message])
        if not tf.executing_eagerly():
            # In a plain graph whatever the factor poisons waits for the
            # assertion: its message is the error, not that of a later check
            # that sees the poisoned values. XLA drops both.
            with tf.control_dependencies([check]):
                factor = tf.identity(factor)
    return factor


def check_value_explained(condition, explanations, values):
    """`check_value` for a condition that several faults can break, each with
    its own message, told apart only when it fails.

    A fused kernel folds several checks into one pass (a row maximum that
    comes out `+inf`); `explanations()` builds the `(condition, message)`
    pairs of the separate checks, in the order their messages win. They run
    eagerly only after `condition` failed, and in a TensorFlow graph inside a
    branch taken only then, so a passing check costs no extra pass.

    Returns:
        `None` when the values were concrete (checked here), else the poison
        factor of `condition`.
    """
    if all(is_concrete(v) for v in values):
        if not bool(ops.convert_to_numpy(condition)):
            for holds, message in explanations():
                if not bool(ops.convert_to_numpy(holds)):
                    raise ValueError(message)
            raise ValueError(explanations()[-1][1])
        return None
    factor = ops.where(condition, 1.0, float("nan"))
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if not tf.executing_eagerly():

            def explain():
                # Chained: the first failing check's message is the error.
                check = tf.no_op()
                for holds, message in explanations():
                    with tf.control_dependencies([check]):
                        check = tf.debugging.Assert(holds, [message])
                with tf.control_dependencies([check]):
                    return tf.identity(condition)

            check = tf.cond(condition, lambda: tf.identity(condition), explain)
            with tf.control_dependencies([check]):
                factor = tf.identity(factor)
    return factor


def combine(*factors):
    """The product of the poison factors that are not `None` (or `None`)."""
    factors = [f for f in factors if f is not None]
    if not factors:
        return None
    out = factors[0]
    for factor in factors[1:]:
        out = out * factor
    return out


def poison(x, *factors):
    """`x` times every poison factor: unchanged, or all NaN when a check failed.

    A multiplication, not an addition: the gradient that flows back through it
    is NaN too, even where the upstream gradient is 0.
    """
    factor = combine(*factors)
    if factor is None:
        return x
    x = ops.convert_to_tensor(x)
    if not keras.backend.is_float_dtype(keras.backend.standardize_dtype(x.dtype)):
        return x  # not a value to poison; its own checks reject it
    return x * ops.cast(factor, x.dtype)


def check_count(value, name, minimum=1):
    """An int >= `minimum`; numpy integers are accepted, bools and floats not."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"`{name}` must be an int >= {minimum}; received {value!r} of type "
            f"{type(value).__name__}."
        )
    if value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}; received {value}.")
    return int(value)


def check_integer(value, name, *, minimum=1, none=None):
    """`value` when it is an integer >= `minimum`, else `ValueError` naming `name`.

    NumPy integers are accepted; bools, floats and strings are not. With
    `none` (what `None` means, e.g. `"for automatic"`), `None` is accepted
    too and the message offers it.
    """
    if value is None and none is not None:
        return None
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, numbers.Integral)
        or value < minimum
    ):
        kind = {0: "a non-negative integer", 1: "a positive integer"}.get(
            minimum, f"an integer >= {minimum}"
        )
        offer = f", or None {none}" if none is not None else ""
        raise ValueError(f"`{name}` must be {kind}{offer}; got {value!r}.")
    return value


def static_dim(x, axis):
    dim = x.shape[axis]
    return None if dim is None else int(dim)


def integer_labels(y_true, name="y_true"):
    """Returns the labels as a 1-D integer tensor without any float round trip.

    Accepts any integer dtype, shape `(batch_size,)` or `(batch_size, 1)`.
    Float labels are accepted only if every value is a whole number (they are
    then cast to int64); a fractional value is an error. Strings are an error.

    Returns:
        `(labels, factor)`: the labels and the poison factor of the
        whole-number check (`None` for integer labels or eager checks).
    """
    if not hasattr(y_true, "dtype"):
        y_true = np.asarray(y_true)
    if isinstance(y_true, np.ndarray) and y_true.dtype.kind in "USO":
        raise TypeError(
            f"`{name}` must hold integer class labels; received strings (numpy "
            f"dtype {y_true.dtype}). Map them to integer ids first, e.g. with "
            "`keras.layers.StringLookup`."
        )
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
        return ops.convert_to_tensor(y_true), None
    if dtype == "bool":
        return ops.cast(y_true, "int32"), None
    if not keras.backend.is_float_dtype(dtype):
        raise TypeError(
            f"`{name}` must hold integer class labels; received dtype {dtype}."
        )
    y_true = ops.convert_to_tensor(y_true)
    whole = ops.all(
        ops.logical_and(ops.isfinite(y_true), ops.equal(y_true, ops.round(y_true)))
    )
    factor = check_value(
        whole,
        f"`{name}` must hold integer class labels; received {dtype} values with a "
        "fractional part (or NaN). Pass integer labels: float labels above "
        "2**24 (float32) or 2048 (float16) cannot tell classes apart.",
        [y_true],
    )
    return ops.cast(y_true, "int64"), factor


def float_matrix(y_pred, name="y_pred", what="(batch_size, dim)", finite=True):
    """Converts to a float32 rank-2 tensor and checks it is finite.

    `finite=False` leaves the finiteness to the caller (a fused kernel that
    checks it on the way, without a pass of its own over the values).

    Returns:
        `(y_pred, factor)`: the float32 tensor and the poison factor of the
        finiteness check (`None` when checked eagerly).
    """
    y_pred = ops.convert_to_tensor(y_pred)
    if len(y_pred.shape) != 2:
        raise ValueError(
            f"`{name}` must have shape {what}; received shape {tuple(y_pred.shape)}."
        )
    dtype = keras.backend.standardize_dtype(y_pred.dtype)
    if not keras.backend.is_float_dtype(dtype):
        raise TypeError(f"`{name}` must be a float tensor; received dtype {dtype}.")
    y_pred = ops.cast(y_pred, "float32")
    if not finite:
        return y_pred, None
    factor = check_value(
        ops.all(ops.isfinite(y_pred)),
        f"`{name}` contains NaN or infinite values; the loss needs finite inputs.",
        [y_pred],
    )
    return y_pred, factor


def nonempty_batch(y_pred, labels, pred_name="y_pred", labels_name="y_true"):
    """Rejects a batch of 0 rows, when its size is known (static or eager).

    A pair-wise loss has no anchor then. A batch size known only at run time
    inside a compiled function is not checked: such a batch gives 0, as a
    batch without any valid anchor does.
    """
    n = static_dim(y_pred, 0)
    if n is None and is_concrete(y_pred):
        n = int(ops.shape(y_pred)[0])
    if n == 0:
        raise ValueError(
            f"`{pred_name}` and `{labels_name}` hold an empty batch (0 rows); a "
            "pair-wise loss needs at least one sample (two for a pair)."
        )


def same_batch(labels, y_pred, labels_name="y_true", pred_name="y_pred"):
    """Checks that labels and predictions have the same batch size.

    Returns:
        The poison factor of a run-time check, or `None`.
    """
    n_labels, n_pred = static_dim(labels, 0), static_dim(y_pred, 0)
    if n_labels is not None and n_pred is not None:
        if n_labels != n_pred:
            raise ValueError(
                f"`{labels_name}` and `{pred_name}` must have the same batch size; "
                f"received {n_labels} labels for {n_pred} rows of `{pred_name}`."
            )
        return None
    return check_value(
        ops.equal(ops.shape(labels)[0], ops.shape(y_pred)[0]),
        f"`{labels_name}` and `{pred_name}` must have the same batch size.",
        [labels, y_pred],
    )


def labels_in_range(labels, num_classes, name="y_true", what=None):
    """Checks 0 <= labels < num_classes (the number of proxies).

    Returns:
        The poison factor of a run-time check, or `None`.
    """
    if what is None:
        what = "the number of columns of `y_pred`, one per proxy"
    if is_concrete(labels) and is_concrete(num_classes):
        values = ops.convert_to_numpy(labels)
        bad = values[(values < 0) | (values >= int(num_classes))]
        if bad.size:
            raise ValueError(
                f"`{name}` must hold class ids in [0, {int(num_classes)}) ({what}); "
                f"received {bad.size} label(s) outside that range, e.g. "
                f"{int(bad[0])}."
            )
        return None
    ok = ops.logical_and(
        ops.all(ops.greater_equal(labels, 0)),
        ops.all(ops.less(labels, ops.cast(num_classes, labels.dtype))),
    )
    return check_value(
        ok,
        f"`{name}` must hold class ids in [0, {num_classes}) ({what}); received "
        "labels outside that range.",
        [labels],
    )


# Cosines computed in float32 (or float16 inside a layer) may pass 1 by a
# rounding error; raw embeddings exceed it by far more.
COSINE_TOLERANCE = 1e-2


def cosine_range_message(name, largest=None):
    """The error of `cosines_in_range`: the argument, what it got (the
    largest magnitude when known) and what it needs."""
    got = "" if largest is None else f" (largest magnitude {largest:.4g})"
    return (
        f"`{name}` holds values outside [-1, 1]{got}: expected cosine "
        "similarities in [-1, 1], the output of `keras_circle.CosineProxies` "
        "(which normalises the embeddings and the class proxies); raw "
        "embeddings or logits are not cosines."
    )


def cosines_in_range(cosine, name="y_pred", skipped=None):
    """Checks that `cosine` holds cosines: every value in `[-1, 1]` up to rounding.

    A class-level loss given raw embeddings (or logits) instead of the output
    of `keras_circle.CosineProxies` trains on a meaningless loss, so this is
    an error eagerly and in plain graphs, and poisons under XLA/`jax.jit`.

    Args:
        cosine: Float32 tensor.
        name: The argument's name, for the message.
        skipped: Bool tensor of entries not to check (`-inf` columns of the
            sampled layout), or `None`.

    Returns:
        The poison factor of a run-time check, or `None`.
    """
    magnitude = ops.abs(cosine)
    if skipped is not None:
        magnitude = ops.where(skipped, ops.zeros_like(magnitude), magnitude)
    # NaN and inf are the finiteness check's to report.
    magnitude = ops.where(ops.isfinite(magnitude), magnitude, ops.zeros_like(magnitude))
    if is_concrete(cosine):
        values = ops.convert_to_numpy(magnitude)
        largest = float(values.max()) if values.size else 0.0
        if largest > 1.0 + COSINE_TOLERANCE:
            raise ValueError(cosine_range_message(name, largest))
        return None
    return check_value(
        ops.all(ops.less_equal(magnitude, 1.0 + COSINE_TOLERANCE)),
        cosine_range_message(name),
        [cosine],
    )
