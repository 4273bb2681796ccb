"""Fused forward and backward of the pair-wise softplus loss (Eq. 1, Eq. 6).

Autodiff of `softplus(LSE_p + LSE_n)` over a similarity matrix keeps every
elementwise intermediate of the forward pass alive for the backward pass (the
logits, both masked exponentials, the alpha weights: several `(batch, batch)`
float tensors) and spends two matmuls in the backward pass. Here a custom
gradient writes the derivatives `dL_i/ds_ij` directly.

- Anchors compared with themselves (`CircleLoss`): `S = E E^T` and the pair
  masks are symmetric, so `keras_circle._panels` computes only the upper
  triangle of `S` (half a matmul forward), keeps only it, and the backward pass
  is one matmul's worth, `dE = (G + G^T) E`, with `G + G^T` formed panel by
  panel from the stored similarities.
- Anchors against other references (a memory bank, the global batch of the
  other replicas): row blocks of anchors; the forward pass keeps
  `H = dL/ds` per block for `dA = G R` and `dR = G^T A`.
"""

from keras import ops

from keras_circle import _panels
from keras_circle import similarity

# Rows per block (or panel). 512 rows of 8192 float32 references are 16 MB
# per temporary: small next to what is stored, large enough that the per-block
# matmul stays efficient on CPU. Panels of 128, 256 and 512 rows at B=8192
# (2 cores, no XLA): 2.2, 1.6 and 1.7 s forward+backward, 1.75, 1.39 and
# 1.29 GB peak RSS.
DEFAULT_BLOCK_SIZE = 512


class PairLogitValues(tuple):
    """`(logit_p, logit_n)` that also knows their derivatives in `s`.

    A logits function (such as `keras_circle.losses.circle_pair_logits`)
    returns this in place of a bare pair of tensors so that the fused kernel
    can build the gradient without autodiff. `slopes()` returns
    `(dlogit_p/ds, dlogit_n/ds)` elementwise, with whatever the logits treat
    as constants (the stop-gradient alpha weights of Eq. 9/10) held constant.
    Unpacking it as a 2-tuple works as before.
    """

    def __new__(cls, logit_p, logit_n, slopes):
        values = super().__new__(cls, (logit_p, logit_n))
        values._slopes = slopes
        return values

    def slopes(self):
        return self._slopes()


def _masked_softmax(logits, mask):
    """Log-sum-exp over `mask` per row, its softmax weights, and non-emptiness.

    Each row is shifted by the maximum of its own masked entries (a shared
    maximum underflows at gamma=256, see `similarity.masked_logsumexp`).
    """
    neg_inf = ops.cast(float("-inf"), logits.dtype)
    masked = ops.where(mask, logits, neg_inf)
    row_max = ops.max(masked, axis=-1, keepdims=True)
    row_max = ops.where(ops.isfinite(row_max), row_max, ops.zeros_like(row_max))
    exps = ops.exp(masked - row_max)
    total = ops.sum(exps, axis=-1, keepdims=True)
    nonempty = ops.squeeze(total > 0, -1)
    total = ops.where(total > 0, total, ops.ones_like(total))
    lse = ops.squeeze(row_max + ops.log(total), -1)
    return lse, exps / total, nonempty


def _block_forward(anchors, refs, labels, ref_labels, row_index, logits_fn, ref_valid):
    """Losses, validity and `H = dL/ds` for one block of anchor rows."""
    s = ops.matmul(anchors, ops.transpose(refs))
    positive, negative = similarity.pair_masks(labels, ref_labels, row_index, ref_valid)
    values = logits_fn(s)
    logit_p, logit_n = values
    slope_p, slope_n = values.slopes()
    lse_p, weight_p, has_p = _masked_softmax(logit_p, positive)
    lse_n, weight_n, has_n = _masked_softmax(logit_n, negative)
    valid = ops.logical_and(has_p, has_n)
    inner = ops.where(valid, lse_p + lse_n, ops.zeros_like(lse_p))
    losses = ops.where(valid, ops.softplus(inner), ops.zeros_like(inner))
    # Z = 1 - exp(-L) = sigmoid(LSE_p + LSE_n) (Eq. 9/10), 0 for invalid rows.
    z = ops.where(valid, ops.sigmoid(inner), ops.zeros_like(inner))
    h = ops.expand_dims(z, 1) * (weight_p * slope_p + weight_n * slope_n)
    return losses, valid, h


def _blocks(n, block_size):
    """Static `(start, stop)` row blocks, or one block when `n` is unknown."""
    if n is None or block_size is None or n <= block_size:
        return [(None, None)]
    return [(i, min(i + block_size, n)) for i in range(0, n, block_size)]


def _forward(
    anchors, refs, labels, ref_labels, self_index, logits_fn, block_size, ref_valid=None
):
    """Per-block `(losses, valid, H)`, the blocks of `H` kept apart.

    `H` stays a list of row blocks: concatenating them would hold two copies
    of a `(batch, num_refs)` matrix at once.
    """
    losses, valid, hs = [], [], []
    for start, stop in _blocks(anchors.shape[0], block_size):
        rows = slice(start, stop)
        loss, ok, h = _block_forward(
            anchors[rows],
            refs,
            labels[rows],
            ref_labels,
            None if self_index is None else self_index[rows],
            logits_fn,
            ref_valid,
        )
        losses.append(loss)
        valid.append(ok)
        hs.append(h)
    if len(hs) == 1:
        return losses[0], valid[0], hs
    return ops.concatenate(losses, axis=0), ops.concatenate(valid, axis=0), hs


def _general_backward(hs, g, a, r, block_size):
    """`S = A R^T`: `dA = G R` per row block, `dR = sum_b G_b^T A_b`."""
    d_a, d_r = [], None
    for (start, stop), h in zip(_blocks(a.shape[0], block_size), hs, strict=True):
        gh = h * ops.expand_dims(g if start is None else g[start:stop], 1)
        a_b = a if start is None else a[start:stop]
        d_a.append(ops.matmul(gh, r))
        part = ops.matmul(ops.transpose(gh), a_b)
        d_r = part if d_r is None else d_r + part
    return ops.concatenate(d_a, axis=0) if len(d_a) > 1 else d_a[0], d_r


def _pack(losses, valid):
    # One float output: custom gradients of mixed int/bool outputs differ
    # between backends; the validity column gets no gradient.
    return ops.stack([losses, ops.cast(valid, losses.dtype)], axis=1)


def fused_pair_softplus(
    labels,
    anchors,
    logits_fn,
    ref_labels=None,
    refs=None,
    self_index=None,
    block_size=DEFAULT_BLOCK_SIZE,
    ref_valid=None,
):
    """`softplus(LSE_p + LSE_n)` per anchor with a hand-written gradient.

    Args:
        labels: Integer labels of the anchors, `(batch_size,)`.
        anchors: L2-normalised float32 anchors, `(batch_size, dim)`.
        logits_fn: Maps similarities to a `PairLogitValues`.
        ref_labels, refs: Labels and L2-normalised embeddings of the
            references. `None` means the anchors themselves (symmetric case:
            one backward matmul). Defaults to `None`.
        self_index: Column of each anchor among the references, never a pair.
            Defaults to `arange(batch_size)` in the symmetric case, else none.
        block_size: Anchor rows per forward block; `None` for one block.
            Defaults to `DEFAULT_BLOCK_SIZE`.
        ref_valid: Bool `(num_refs,)`: references that count, or `None` for
            all. Only with explicit `refs`.

    Returns:
        `(losses, valid)` as in `keras_circle.losses.pair_softplus_loss`.
        Labels get no gradient.
    """
    labels = ops.convert_to_tensor(labels)
    if refs is None:
        self_index = ops.arange(ops.shape(labels)[0], dtype="int32")

        @ops.custom_gradient
        def symmetric(e):
            # The forward pass runs on a stop-gradient view: an eager
            # GradientTape would otherwise record every elementwise op of it
            # and keep all their (batch, batch) inputs alive for a backward
            # pass that the custom gradient replaces.
            panels = _panels.Panels(ops.stop_gradient(e), labels, logits_fn, block_size)
            losses, valid = panels.forward()

            def grad(upstream):
                return panels.backward(upstream[:, 0])

            return _pack(losses, valid), grad

        out = symmetric(anchors)
    else:
        ref_labels = ops.convert_to_tensor(ref_labels)
        if self_index is not None:
            self_index = ops.cast(self_index, "int32")

        @ops.custom_gradient
        def general(a, r):
            a, r = ops.stop_gradient(a), ops.stop_gradient(r)  # as above
            losses, valid, h = _forward(
                a, r, labels, ref_labels, self_index, logits_fn, block_size, ref_valid
            )

            def grad(upstream):
                return _general_backward(h, upstream[:, 0], a, r, block_size)

            return _pack(losses, valid), grad

        out = general(anchors, refs)
    return out[:, 0], out[:, 1] > 0.5
