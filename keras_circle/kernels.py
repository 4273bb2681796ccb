"""Fused forward and backward of the pair-wise softplus loss (Eq. 1, Eq. 6).

Autodiff of `softplus(LSE_p + LSE_n)` over a similarity matrix keeps every
elementwise intermediate of the forward pass alive for the backward pass (the
logits, both masked exponentials, the alpha weights: several `(batch, batch)`
float tensors) and spends two matmuls in the backward pass. Here the gradient
is written by hand, in the shape of a custom VJP: each case has a `forward`
that returns the per-anchor losses and its residuals, and a `backward` that
takes the residuals and the upstream gradient.

- Anchors compared with themselves (`CircleLoss`): `S = E E^T` and the pair
  masks are symmetric, so `keras_circle.panels` computes only the upper
  triangle of `S` (half a matmul forward), keeps only it, and the backward pass
  is one matmul's worth, `dE = (G + G^T) E`, with `G + G^T` formed panel by
  panel from the stored similarities; in a TensorFlow step that XLA compiles
  whole, as loops over panels in a cyclic layout (`keras_circle.panel_loops`).
- Anchors against other references (a memory bank, the global batch of the
  other replicas): row blocks of anchors (`block_forward`); the forward pass
  keeps `H = dL/ds` per block for `dA = G R` and `dR = G^T A`.

The logits are a `PairLogits`: their values and their slopes in `s`. For
timings see the Performance section of the README (`benchmarks/bench_losses.py`).
"""

from typing import NamedTuple

import keras
from keras import ops

from keras_circle import panel_loops
from keras_circle import panels
from keras_circle import similarity

# Rows per block (or panel): large enough that the per-block matmul stays
# efficient on CPU, small enough that a block's temporaries (16 MB each for
# 512 rows of 8192 float32 references) stay small next to what is stored.
DEFAULT_BLOCK_SIZE = 512
# On a GPU the panels' kernels run one after the other and small panels leave
# most of the chip idle: on an H200 (JAX, XLA, float32) 512-row panels took
# 1.22x the floor at B=4096 and 0.98x at B=8192, 2048-row panels 0.98x and
# 0.90x (`benchmarks/bench_losses_jax.py`, README Performance). Memory is what
# a GPU has to spare here: the stored triangle grows by `B * rows / 2` floats.
ACCELERATOR_BLOCK_SIZE = 2048


def on_accelerator(x):
    """Whether the backend will run the kernel on `x` on a GPU (or TPU)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.default_backend() != "cpu"
    if backend == "tensorflow":
        import tensorflow as tf

        # TensorFlow places matmuls on a visible GPU unless told otherwise.
        return bool(tf.config.list_logical_devices("GPU"))
    if backend == "torch":
        import torch

        if isinstance(x, torch.Tensor):
            return x.device.type not in ("cpu", "meta")
        # Keras converts other inputs to tensors on its default device.
        return torch.cuda.is_available()
    return False


def default_block_size(x):
    """`ACCELERATOR_BLOCK_SIZE` on a GPU, else `DEFAULT_BLOCK_SIZE`."""
    return ACCELERATOR_BLOCK_SIZE if on_accelerator(x) else DEFAULT_BLOCK_SIZE


class PairLogits:
    """The logits of a pair-wise loss as functions of the similarities `s`.

    `values(s)` returns `(logit_p, logit_n)`, the logit each entry would have
    as a positive and as a negative; `slopes(s)` their elementwise derivatives
    in `s`, with whatever the logits treat as constants (the stop-gradient
    alpha weights of Eq. 9/10) held constant. The fused kernel needs both;
    `values_and_slopes(s)` gives them together (a subclass overrides it to
    share work between the two).
    """

    def values(self, s):
        raise NotImplementedError

    def slopes(self, s):
        raise NotImplementedError

    def values_and_slopes(self, s):
        return self.values(s), self.slopes(s)


def block_forward(anchors, refs, labels, ref_labels, self_index, logits, ref_valid):
    """Losses, validity and `H = dL/ds` of one block of anchor rows.

    Differentiable as written (autodiff of its losses is the plain
    formulation); `H` is what the hand-written backward uses instead.
    """
    s = ops.matmul(anchors, ops.transpose(refs))
    positive, negative = similarity.pair_masks(
        labels, ref_labels, self_index, ref_valid
    )
    (logit_p, logit_n), (slope_p, slope_n) = logits.values_and_slopes(s)
    lse_p, weight_p, has_p = similarity.masked_softmax(logit_p, positive)
    lse_n, weight_n, has_n = similarity.masked_softmax(logit_n, negative)
    valid = ops.logical_and(has_p, has_n)
    losses, z = similarity.pair_softplus(lse_p, lse_n, valid)
    h = ops.expand_dims(z, 1) * (weight_p * slope_p + weight_n * slope_n)
    return losses, valid, h


def _blocks(n, block_size):
    """Static `(start, stop)` row blocks, or one block when `n` is unknown."""
    if n is None or block_size is None or n <= block_size:
        return [(None, None)]
    return [(i, min(i + block_size, n)) for i in range(0, n, block_size)]


class BlockResiduals(NamedTuple):
    """What the backward pass of the general case needs from its forward."""

    anchors: object
    refs: object
    hs: list  # `H` per row block, kept apart (see `general_forward`)
    block_size: object


def general_forward(
    anchors, refs, labels, ref_labels, self_index, logits, block_size, ref_valid=None
):
    """Per-anchor `(losses, valid)` against `refs`, and the `BlockResiduals`.

    `H` stays a list of row blocks: concatenating them would hold two copies
    of a `(batch, num_refs)` matrix at once.
    """
    losses, valid, hs = [], [], []
    for start, stop in _blocks(anchors.shape[0], block_size):
        rows = slice(start, stop)
        loss, ok, h = block_forward(
            anchors[rows],
            refs,
            labels[rows],
            ref_labels,
            None if self_index is None else self_index[rows],
            logits,
            ref_valid,
        )
        losses.append(loss)
        valid.append(ok)
        hs.append(h)
    residuals = BlockResiduals(anchors, refs, hs, block_size)
    if len(hs) == 1:
        return losses[0], valid[0], residuals
    return ops.concatenate(losses, 0), ops.concatenate(valid, 0), residuals


def general_backward(residuals, g):
    """`S = A R^T`: `dA = G R` per row block, `dR = sum_b G_b^T A_b`."""
    a, r, hs, block_size = residuals
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
    logits,
    ref_labels=None,
    refs=None,
    self_index=None,
    block_size="auto",
    ref_valid=None,
):
    """`softplus(LSE_p + LSE_n)` per anchor with a hand-written gradient.

    Args:
        labels: Integer labels of the anchors, `(batch_size,)`.
        anchors: L2-normalised float32 anchors, `(batch_size, dim)`.
        logits: A `PairLogits`.
        ref_labels, refs: Labels and L2-normalised embeddings of the
            references. `None` means the anchors themselves (symmetric case:
            one backward matmul). Defaults to `None`.
        self_index: Column of each anchor among the references, never a pair.
            Defaults to `arange(batch_size)` in the symmetric case, else none.
        block_size: Anchor rows per forward block (or panel); `None` for
            one block. Defaults to `"auto"`: `default_block_size(anchors)`.
        ref_valid: Bool `(num_refs,)`: references that count, or `None` for
            all. Only with explicit `refs`.

    Returns:
        `(losses, valid)` as in `keras_circle.losses.pair_softplus_loss`.
        Labels get no gradient.
    """
    labels = ops.convert_to_tensor(labels)
    if isinstance(block_size, str) and block_size == "auto":
        block_size = default_block_size(anchors)
    # The forward passes run on stop-gradient views: an eager GradientTape
    # would otherwise record every elementwise op of them and keep all their
    # (batch, batch) inputs alive for a backward pass that is replaced here.
    if refs is None:
        layout = panel_loops.cyclic_layout(anchors.shape[0], block_size)

        @ops.custom_gradient
        def symmetric(e):
            if layout is None:
                kernel = panels
                losses, valid, residuals = panels.forward(
                    ops.stop_gradient(e), labels, logits, block_size
                )
            else:
                kernel = panel_loops
                losses, valid, residuals = panel_loops.forward(
                    ops.stop_gradient(e), labels, logits, layout
                )

            def grad(*args, upstream=None):
                # TensorFlow and JAX pass the upstream gradient alone;
                # PyTorch passes the forward inputs, then `upstream=`.
                if upstream is None:
                    (upstream,) = args
                return kernel.backward(residuals, logits, upstream[:, 0])

            return _pack(losses, valid), grad

        out = symmetric(anchors)
    else:
        ref_labels = ops.convert_to_tensor(ref_labels)
        if self_index is not None:
            self_index = ops.cast(self_index, "int32")

        @ops.custom_gradient
        def general(a, r):
            losses, valid, residuals = general_forward(
                ops.stop_gradient(a),
                ops.stop_gradient(r),
                labels,
                ref_labels,
                self_index,
                logits,
                block_size,
                ref_valid,
            )

            def grad(*args, upstream=None):
                if upstream is None:  # as in `symmetric` above
                    (upstream,) = args
                return general_backward(residuals, upstream[:, 0])

            return _pack(losses, valid), grad

        out = general(anchors, refs)
    return out[:, 0], out[:, 1] > 0.5
