"""`IntegerLabelLoss`: the base of every keras_circle loss (and `CircleLossBase`).

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
import numpy as np
from keras import ops

from keras_circle import _checks
from keras_circle import distribute

_MEAN_REDUCTIONS = ("sum_over_batch_size", "mean")


def _mean(total, divisor):
    """`total / divisor`, and `total` (0, or NaN from a poisoned loss) if 0.

    Not `divide_no_nan`, which would turn a NaN total over no valid anchor
    into 0: a NaN input wins over the zero-loss rule, in value and gradient.
    """
    return total / ops.where(divisor > 0, divisor, ops.ones_like(divisor))


def _sample_weights(sample_weight, losses):
    """`sample_weight` as float32 `(batch_size,)` (or a scalar), shape-checked."""
    if not hasattr(sample_weight, "shape"):
        sample_weight = np.asarray(sample_weight)
    shape = tuple(sample_weight.shape)
    if len(shape) == 2 and shape[1] == 1:
        sample_weight = ops.reshape(sample_weight, (-1,))
        shape = shape[:1]
    batch = losses.shape[0]
    if len(shape) > 1 or (
        len(shape) == 1 and None not in (batch, shape[0]) and batch != shape[0]
    ):
        raise ValueError(
            "`sample_weight` must be a scalar or have shape (batch_size,) or "
            f"(batch_size, 1) with batch_size={batch}; received shape {shape}."
        )
    return ops.cast(ops.convert_to_tensor(sample_weight), "float32")


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
        weights = weights * _sample_weights(sample_weight, losses)
    # A NaN loss stays NaN where its weight is 0 (XLA turns `NaN * 0` into a
    # select of 0): a NaN input wins over the zero-loss rule.
    weighted = ops.where(ops.isnan(losses), losses, losses * weights)
    if reduction is None or reduction == "none":
        return weighted
    total = ops.sum(weighted)
    if reduction == "sum":
        return total
    if reduction == "mean_with_sample_weight":
        divisor = ops.sum(weights)
    else:
        divisor = ops.sum(ops.cast(valid, "float32"))
    if distribute.in_replica_context():
        return _mean(total, distribute.global_sum(divisor))
    loss = _mean(total, divisor)
    replicas = distribute.num_replicas()
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
            labels, factor = _checks.integer_labels(y_true)
            # Bad labels poison the predictions too: NaN gradients.
            y_pred = _checks.poison(y_pred, factor)
            losses, valid = self.per_sample(labels, y_pred)
            losses = _checks.poison(losses, factor)
            return reduce_valid(losses, valid, sample_weight, self.reduction)

    def call(self, y_true, y_pred):
        labels, factor = _checks.integer_labels(y_true)
        losses, _ = self.per_sample(labels, _checks.poison(y_pred, factor))
        return _checks.poison(losses, factor)

    def per_sample(self, labels, y_pred):
        raise NotImplementedError

    def get_config(self):
        config = super().get_config()
        config.update(self._hyperparameters())
        return config

    def _hyperparameters(self):
        return {}


class CircleLossBase(IntegerLabelLoss):
    """An `IntegerLabelLoss` configured by the Circle loss hyperparameters.

    `gamma` (scale), `margin` (relaxation, in `[0, 1)`) and
    `stop_alpha_gradient`, checked here and saved in the config: the pair-wise
    `CircleLoss` and the class-level `ClassCircleLoss` take the same three.
    """

    def __init__(self, gamma, margin, stop_alpha_gradient, reduction, name, dtype):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.gamma = _checks.check_gamma(gamma)
        self.margin = _checks.check_margin(margin)
        self.stop_alpha_gradient = bool(stop_alpha_gradient)

    def _hyperparameters(self):
        return {
            "gamma": self.gamma,
            "margin": self.margin,
            "stop_alpha_gradient": self.stop_alpha_gradient,
        }
