"""TensorFlow-only: a run's evaluation metrics as TensorBoard scalars.

Training's own logs (the loss and `keras_circle.metrics`) reach TensorBoard
through `keras.callbacks.TensorBoard`; the evaluation after training does not
run inside `fit`, so its numbers are written here, next to them, under
`logs/evaluation` at the run's last step.
"""

import importlib.util
import numbers


def scalar_metrics(metrics, prefix=""):
    """The numbers of a (nested) metrics dict as `{tag: float}`.

    Nested keys are joined with `/` (`{"recall_at_k": {1: 0.9}}` gives
    `"recall_at_k/1"`); lists, arrays, strings and `None` are left out.
    """
    out = {}
    for key, value in metrics.items():
        tag = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(scalar_metrics(value, f"{tag}/"))
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            out[tag] = float(value)
    return out


def write_evaluation(logdir, metrics, step):
    """Writes the numbers of `metrics` as scalars at `step` into `logdir`.

    Nothing is written (and `{}` returned) without the `tensorboard` package,
    which `tf.summary` needs.

    Returns:
        The `{tag: value}` written.
    """
    if importlib.util.find_spec("tensorboard") is None:
        return {}
    import tensorflow as tf

    scalars = scalar_metrics(metrics)
    writer = tf.summary.create_file_writer(str(logdir))
    with writer.as_default():
        for tag, value in scalars.items():
            tf.summary.scalar(tag, value, step=int(step))
    writer.close()
    return scalars
