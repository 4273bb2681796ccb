"""Similarities, pair masks and the masked log-sum-exp shared by every loss."""

from keras import ops

from keras_circle import fusion

# Norms below this are treated as this, so a zero embedding maps to zero
# instead of NaN (and keeps a finite gradient).
_NORM_EPSILON = 1e-12


def _rescale_divisor(x, squared, axis):
    """What `l2_normalize` divides a row by before normalising it: its
    largest magnitude where its squared norm overflows or underflows (and the
    row is finite and not zero), else 1."""
    direct = ops.logical_and(
        ops.isfinite(squared), ops.greater_equal(squared, _NORM_EPSILON**2)
    )
    largest = ops.stop_gradient(ops.max(ops.abs(x), axis=axis, keepdims=True))
    # Zero rows stay zero (nothing to rescale). Rows with NaN or inf come out
    # NaN whether rescaled or not (XLA's max may skip a NaN).
    rescale = ops.logical_and(
        ops.logical_not(direct),
        ops.logical_and(ops.isfinite(largest), ops.greater(largest, 0)),
    )
    return ops.where(rescale, largest, ops.ones_like(largest))


def l2_normalize(x, axis=-1):
    """L2-normalises `x` along `axis` in its own dtype; zero rows stay zero.

    A row whose squared norm overflows (norms above about 1.8e19 in float32)
    or falls below `1e-24` (norms below 1e-12) is first divided by its largest
    magnitude, a constant for back-propagation, so that huge and tiny rows
    normalise like any other (`l2_normalize(1e30 * x) == l2_normalize(x)`).
    Other rows are divided by 1: their values and gradients are unchanged.
    A non-finite row gives NaN.
    """
    squared = ops.sum(ops.square(x), axis=axis, keepdims=True)
    x = x / _rescale_divisor(x, squared, axis)
    squared = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x * ops.rsqrt(ops.maximum(squared, _NORM_EPSILON**2))


def normalize_rows(x):
    """`l2_normalize(x)` of a matrix's rows, with a hand-written gradient.

    For a large matrix (the `(num_classes, dim)` proxies of
    `keras_circle.CosineProxies`): autodiff of `l2_normalize` keeps several
    temporaries of the matrix's size and the rescaling of huge and tiny rows
    costs a pass of its own. Here the rescaling runs only when some row needs
    it, and the backward pass is the projection
    `dx = (dy - y * sum(dy * y)) / norm(x)`, two reads of the matrix. Same
    values and, up to rounding, the same gradients as `l2_normalize`.
    """
    x = ops.convert_to_tensor(x)

    def forward(x):
        squared = fusion.sums(ops.square(x), 1, keepdims=True)
        direct = ops.logical_and(
            ops.isfinite(squared), ops.greater_equal(squared, _NORM_EPSILON**2)
        )

        def rescaled():
            divisor = _rescale_divisor(x, squared, -1)
            return ops.sum(ops.square(x / divisor), axis=-1, keepdims=True), divisor

        # Every row of a trained matrix has a norm in range: the rescaling
        # (a max over the matrix, a division) is skipped. Only per-row
        # values leave the branch (a branch returning the matrix copies it).
        squared, divisor = ops.cond(
            ops.all(direct), lambda: (squared, ops.ones_like(squared)), rescaled
        )
        scale = ops.rsqrt(ops.maximum(squared, _NORM_EPSILON**2)) / divisor
        return x * scale, scale

    def backward(upstream, y, scale):
        # A zero row (squared norm clamped) has y = 0: dx = dy / 1e-12, as
        # autodiff of the clamp gives.
        along = fusion.sums(upstream * y, 1, keepdims=True)
        return (upstream - y * along) * scale

    forward, backward = fusion.fuse(forward), fusion.fuse(backward)

    @ops.custom_gradient
    def fused(x):
        y, scale = forward(ops.stop_gradient(x))

        def grad(*args, upstream=None):
            # TensorFlow and JAX pass the upstream gradient alone; PyTorch
            # passes the forward inputs, then `upstream=`.
            if upstream is None:
                (upstream,) = args
            return backward(upstream, y, scale)

        return y, grad

    return fused(x)


def cosine_similarity(a, b):
    """Cosine similarities `(len(a), len(b))` in float32 of two embedding sets."""
    a = l2_normalize(ops.cast(a, "float32"))
    b = l2_normalize(ops.cast(b, "float32"))
    return ops.matmul(a, ops.transpose(b))


def pair_masks(labels, ref_labels, self_index=None, ref_valid=None):
    """Boolean masks of positive and negative pairs.

    Args:
        labels: Integer labels of the anchors, `(batch_size,)`.
        ref_labels: Integer labels of the references, `(num_refs,)`.
        self_index: Column of each anchor's own sample among the references,
            `(batch_size,)` int, or `None` when the anchors are not among the
            references. The self-pair is never a positive.
        ref_valid: Bool `(num_refs,)`, or `None` for all. A reference where it
            is False is neither a positive nor a negative of any anchor.

    Returns:
        `(positive, negative)`, two bool tensors `(batch_size, num_refs)`.
    """
    same = ops.equal(ops.expand_dims(labels, 1), ops.expand_dims(ref_labels, 0))
    negative = ops.logical_not(same)
    if ref_valid is not None:
        ref_valid = ops.expand_dims(ref_valid, 0)
        same = ops.logical_and(same, ref_valid)
        negative = ops.logical_and(negative, ref_valid)
    if self_index is None:
        return same, negative
    columns = ops.arange(ops.shape(ref_labels)[0], dtype="int32")
    is_self = ops.equal(
        ops.expand_dims(ops.cast(self_index, "int32"), 1),
        ops.expand_dims(columns, 0),
    )
    return ops.logical_and(same, ops.logical_not(is_self)), negative


def masked_softmax(logits, mask, axis=-1):
    """Log-sum-exp and softmax weights of `logits` over the entries where `mask` is True.

    Each row uses the maximum of its own masked entries (a constant for
    back-propagation), so a row of very negative logits (gamma=256 and beyond)
    does not underflow to `-inf` against a maximum taken from other entries
    (the fault of a shared row maximum, pytorch-metric-learning issue 173).
    Rows without any masked entry give `lse = -inf`, zero weights and a zero,
    finite gradient.

    Returns:
        `(lse, weights, nonempty)`: the log-sum-exp per row, the softmax
        weights with the shape of `logits` (0 outside `mask`), and a bool
        telling which rows had at least one masked entry.
    """
    # NumPy input minus a PyTorch tensor fails (TensorFlow and JAX convert it).
    logits = ops.convert_to_tensor(logits)
    nonempty = ops.any(mask, axis=axis)
    neg_inf = ops.cast(float("-inf"), logits.dtype)
    row_max = ops.max(ops.where(mask, logits, neg_inf), axis=axis, keepdims=True)
    row_max = ops.stop_gradient(
        ops.where(ops.isfinite(row_max), row_max, ops.zeros_like(row_max))
    )
    exps = ops.exp(ops.where(mask, logits - row_max, neg_inf))
    total = ops.sum(exps, axis=axis, keepdims=True)
    # log(0) would give an infinite gradient; empty rows read log(1) instead
    # and are replaced by -inf after the log.
    total = ops.where(ops.expand_dims(nonempty, axis), total, ops.ones_like(total))
    lse = ops.squeeze(row_max + ops.log(total), axis)
    return ops.where(nonempty, lse, neg_inf), exps / total, nonempty


def masked_logsumexp(logits, mask, axis=-1):
    """Log-sum-exp of `logits` over the entries where `mask` is True.

    `masked_softmax` without its weights.

    Returns:
        `(lse, nonempty)`: the log-sum-exp and a bool telling which rows had at
        least one masked entry.
    """
    lse, _, nonempty = masked_softmax(logits, mask, axis)
    return lse, nonempty


def pair_softplus(lse_p, lse_n, valid):
    """`softplus(LSE_p + LSE_n)` of the valid anchors, and its `Z` (Eq. 9/10).

    `Z = 1 - exp(-L) = sigmoid(LSE_p + LSE_n)` is the factor of every
    `dL/ds`. Both are 0 for the other anchors, with zero, finite gradients.

    Returns:
        `(losses, z)`, each `(batch_size,)`.
    """
    inner = ops.where(valid, lse_p + lse_n, ops.zeros_like(lse_p))
    zeros = ops.zeros_like(inner)
    return ops.where(valid, ops.softplus(inner), zeros), ops.where(
        valid, ops.sigmoid(inner), zeros
    )
