"""Fused forward and backward of a class-level margin softmax (Circle, K = 1).

Autodiff of `logsumexp(where(target, t(s), o(s))) - t(s_target)` over
`(batch_size, num_classes)` cosines keeps the logits, the exponentials, the
target mask and the alpha weights alive for the backward pass, and each of
them is a pass over the `B x C` matrix (100,000 classes: 200 MB per pass at a
batch of 512). Here the gradient is written by hand: the forward pass takes
the logits' row maxima, a count of each row's faulty cosines (not finite, or
beyond `bound`: `fusion.sums`, which XLA on a CPU runs without writing a
masked copy out) and the shifted sums of the exponentials, and the backward
pass is one elementwise pass, `dL/ds = g * slope * (softmax - target)`, that
the two matmuls of the proxies layer then read.
"""

from keras import ops

from keras_circle import _checks
from keras_circle import fusion

_FLOAT32_MAX = 3.4028234663852886e38


def _logits(s, labels, logits):
    """`(values, target)`: the logit of each entry as its row's target class
    or as another class, and the bool target mask (never materialised under
    XLA: a compare of column indices with the labels)."""
    classes = ops.arange(ops.shape(s)[1], dtype=labels.dtype)
    target = ops.equal(ops.expand_dims(labels, 1), ops.expand_dims(classes, 0))
    target_logit, other_logit = logits.values(s)
    return ops.where(target, target_logit, other_logit), target


def margin_softmax(labels, s, logits, factor=None, name="y_pred", bound=None):
    """Per-sample `logsumexp(logits) - target_logit` with a hand-written gradient.

    Args:
        labels: Integer class ids `(batch_size,)`. Out-of-range ids are
            clipped for the gather of the target cosines: the caller checks
            them and passes the poison factor of that check.
        s: Float32 cosines `(batch_size, num_classes)`.
        logits: A `keras_circle.kernels.PairLogits` whose `values(s)` are
            `(target_logit, other_logit)` and `slopes(s)` their derivatives.
        factor: The poison factor of the caller's run-time checks, or `None`.
        name: Name of `s` in the errors of its checks.
        bound: Largest cosine magnitude accepted (`[-1, 1]` up to rounding),
            checked on the way like the finiteness, or `None` for no range
            check.

    Returns:
        Float32 `(batch_size,)`, poisoned (value and gradient of `s`) with
        `factor` and with the checks of `s`.
    """
    num_classes = ops.shape(s)[1]
    picked_index = ops.clip(ops.cast(labels, "int32"), 0, num_classes - 1)

    def forward(s, labels, picked_index):
        values, _ = _logits(s, labels, logits)
        # A row with a NaN or infinite cosine (or one beyond `bound`) gets
        # +inf (a NaN would be skipped by XLA's max); a row of good cosines
        # never does. Which fault it was is worked out only on failure. The
        # faults are counted apart from the maximum, which then reads the
        # logits as they are (under XLA on a CPU, a masked copy of them
        # would be written out first).
        if bound is None:
            good = ops.isfinite(s)
        else:
            good = ops.less_equal(ops.abs(s), bound)  # False for NaN and inf
        faults = fusion.sums(ops.where(good, 0.0, 1.0), 1)
        row_max = ops.minimum(ops.max(values, axis=1), _FLOAT32_MAX)
        row_max = ops.where(faults > 0, float("inf"), row_max)
        shift = ops.where(ops.isfinite(row_max), row_max, 0.0)
        total = ops.sum(ops.exp(values - ops.expand_dims(shift, 1)), axis=1)
        picked = ops.take_along_axis(s, ops.expand_dims(picked_index, 1), axis=1)
        target_logit, _ = logits.values(picked[:, 0])
        return row_max, shift, total, shift + ops.log(total) - target_logit

    def backward(s, labels, shift, total, g):
        values, target = _logits(s, labels, logits)
        slope_target, slope_other = logits.slopes(s)
        softmax = ops.exp(values - ops.expand_dims(shift, 1)) / ops.expand_dims(
            total, 1
        )
        weight = softmax - ops.cast(target, softmax.dtype)
        slope = ops.where(target, slope_target, slope_other)
        return ops.expand_dims(g, 1) * slope * weight

    def explanations(s):
        found = [
            (
                ops.all(ops.isfinite(s)),
                f"`{name}` contains NaN or infinite values; the loss needs "
                "finite inputs.",
            )
        ]
        if bound is not None:
            found.append(
                (
                    ops.all(ops.less_equal(ops.abs(s), bound)),
                    _checks.cosine_range_message(name),
                )
            )
        return found

    forward, backward = fusion.fuse(forward), fusion.fuse(backward)

    @ops.custom_gradient
    def fused(s):
        s = ops.stop_gradient(s)
        row_max, shift, total, losses = forward(s, labels, picked_index)
        finite = _checks.check_value_explained(
            ops.all(ops.isfinite(row_max)), lambda: explanations(s), [s]
        )
        poison = _checks.combine(factor, finite)
        losses = _checks.poison(losses, poison)

        def grad(*args, upstream=None):
            # TensorFlow and JAX pass the upstream gradient alone; PyTorch
            # passes the forward inputs, then `upstream=`.
            if upstream is None:
                (upstream,) = args
            g = _checks.poison(upstream, poison)
            return backward(s, labels, shift, total, g)

        return losses, grad

    return fused(s)
