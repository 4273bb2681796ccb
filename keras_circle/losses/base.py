"""`IntegerLabelLoss`: the base of every keras_circle loss.

Two things differ from `keras.losses.Loss`:

- `keras.losses.Loss.__call__` casts `y_true` to the loss's float dtype before
  `call` sees it, so integer labels collide (2**24 and 2**24 + 1 are one class
  in float32, 2048 and 2049 in float16) and metric-learning losses silently
  go to 0. Here labels stay integers from the input to the pair masks.
- Per-sample losses come with a validity mask (an anchor without a positive or
  without a negative has no loss), and the mean reductions divide by the
  number of valid anchors, not by the batch size.
"""

import keras
from keras import ops

from keras_circle import _checks

_MEAN_REDUCTIONS = ("sum_over_batch_size", "mean")


def _num_replicas():
    """Replicas of the enclosing `tf.distribute` strategy (1 elsewhere)."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def _distribute():
    """`keras_circle.distribute` inside a multi-replica context, else `None`."""
    if keras.backend.backend() != "tensorflow":
        return None
    from keras_circle import distribute

    return distribute if distribute.in_replica_context() else None


def reduce_valid(losses, valid, sample_weight=None, reduction="sum_over_batch_size"):
    """Reduces per-sample `losses` over the samples where `valid` is True.

    Keras's reductions, with a validity mask: `"sum_over_batch_size"` and
    `"mean"` divide by the number of valid samples, `"mean_with_sample_weight"`
    by the sum of their weights, `"sum"` sums, `None`/`"none"` returns the
    weighted vector (zeros where invalid). No valid sample gives exactly 0.

    Inside a `tf.distribute` replica context the mean reductions divide the
    local sum by the divisor summed over every replica (the global number of
    valid anchors), so that the per-replica losses, and the gradients the
    optimizer sums across replicas, add up to the single-device mean of the
    global batch, uneven batches included. Elsewhere under a strategy (the
    cross-replica call Keras makes while building) they are divided by the
    number of replicas, as Keras does.
    """
    weights = ops.cast(valid, "float32")
    if sample_weight is not None:
        sample_weight = ops.cast(ops.convert_to_tensor(sample_weight), "float32")
        if len(sample_weight.shape) == 2 and sample_weight.shape[1] == 1:
            sample_weight = ops.squeeze(sample_weight, axis=1)
        weights = weights * sample_weight
    weighted = losses * weights
    if reduction is None or reduction == "none":
        return weighted
    total = ops.sum(weighted)
    if reduction == "sum":
        return total
    if reduction == "mean_with_sample_weight":
        divisor = ops.sum(weights)
    else:
        divisor = ops.sum(ops.cast(valid, "float32"))
    distribute = _distribute()
    if distribute is not None:
        return ops.divide_no_nan(total, distribute.global_sum(divisor))
    loss = ops.divide_no_nan(total, divisor)
    replicas = _num_replicas()
    if replicas > 1:
        loss = loss / float(replicas)
    return loss


class IntegerLabelLoss(keras.losses.Loss):
    """A `keras.losses.Loss` whose labels stay integers and whose mean skips
    samples without a loss.

    Subclasses implement `per_sample(labels, y_pred) -> (losses, valid)` with
    `labels` a 1-D integer tensor; `call` returns the per-sample vector and
    `__call__` applies the reduction. Computation is float32 whatever the
    `dtype` argument or the global dtype policy; the reduced loss is float32.
    """

    def __call__(self, y_true, y_pred, sample_weight=None):
        with keras.name_scope(self.name):
            labels = _checks.integer_labels(y_true)
            losses, valid = self.per_sample(labels, y_pred)
            return reduce_valid(losses, valid, sample_weight, self.reduction)

    def call(self, y_true, y_pred):
        losses, _ = self.per_sample(_checks.integer_labels(y_true), y_pred)
        return losses

    def per_sample(self, labels, y_pred):
        raise NotImplementedError

    def get_config(self):
        config = super().get_config()
        config.update(self._hyperparameters())
        return config

    def _hyperparameters(self):
        return {}
