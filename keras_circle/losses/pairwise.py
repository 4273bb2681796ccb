"""Circle loss with pair-wise labels (the paper's Eq. 6 over a batch)."""

import keras
from keras import ops

from keras_circle import _checks
from keras_circle import distribute
from keras_circle import kernels
from keras_circle import similarity
from keras_circle.losses.base import CircleLossBase


class CirclePairLogits(kernels.PairLogits):
    """The reweighted logits of Eq. 6 for positive and negative scores.

    `values(s)` is `(logit_p, logit_n)`, each with the shape of `s`: the logit
    an entry would have as a positive, `-gamma * alpha_p * (s - delta_p)`, and
    as a negative, `gamma * alpha_n * (s - delta_n)`. `slopes(s)` are their
    derivatives in `s`, for the fused pair-wise kernel.
    """

    def __init__(self, gamma, margin, stop_alpha_gradient=True):
        self.gamma, self.margin = gamma, margin
        self.stop_alpha_gradient = stop_alpha_gradient
        # Eq. 5 with the simplification of section 3.2.
        self.optimum_p, self.optimum_n = 1.0 + margin, -margin
        self.delta_p, self.delta_n = 1.0 - margin, margin

    def _alphas(self, s):
        alpha_p = ops.relu(self.optimum_p - s)
        alpha_n = ops.relu(s - self.optimum_n)
        if self.stop_alpha_gradient:
            # The weights are constants for back-propagation: Eq. 9/10 hold.
            alpha_p = ops.stop_gradient(alpha_p)
            alpha_n = ops.stop_gradient(alpha_n)
        return alpha_p, alpha_n

    def _values(self, s, alpha_p, alpha_n):
        gamma = self.gamma
        return -gamma * alpha_p * (s - self.delta_p), gamma * alpha_n * (
            s - self.delta_n
        )

    def _slopes(self, s, alpha_p, alpha_n):
        gamma = self.gamma
        if self.stop_alpha_gradient:
            return -gamma * alpha_p, gamma * alpha_n
        # Product rule with relu' = 1 strictly inside its linear part.
        inside_p = ops.cast(s < self.optimum_p, s.dtype)
        inside_n = ops.cast(s > self.optimum_n, s.dtype)
        return (
            -gamma * (alpha_p - inside_p * (s - self.delta_p)),
            gamma * (alpha_n + inside_n * (s - self.delta_n)),
        )

    def values(self, s):
        return self._values(s, *self._alphas(s))

    def slopes(self, s):
        return self._slopes(s, *self._alphas(s))

    def values_and_slopes(self, s):
        alphas = self._alphas(s)
        return self._values(s, *alphas), self._slopes(s, *alphas)


def circle_pair_logits(s, gamma, margin, stop_alpha_gradient=True):
    """`(logit_p, logit_n)` of Eq. 6: `CirclePairLogits(...).values(s)`."""
    return CirclePairLogits(gamma, margin, stop_alpha_gradient).values(s)


def pair_softplus_loss(
    labels,
    embeddings,
    logits,
    ref_labels=None,
    ref_embeddings=None,
    self_index=None,
    ref_valid=None,
):
    """`softplus(LSE_n + LSE_p)` per anchor over its own positives and negatives.

    The shared body of every pair-wise loss of the unified form (Eq. 1, Eq. 6):
    `log(1 + sum_j exp(logit_n^j) * sum_i exp(logit_p^i))`, each log-sum-exp
    over its own masked set with its own maximum, computed by the fused
    kernel (`keras_circle.kernels.fused_pair_softplus`) with its hand-written
    gradient.

    Args:
        labels: Integer labels of the anchors, `(batch_size,)`.
        embeddings: Anchor embeddings, `(batch_size, dim)`, any scale.
        logits: A `keras_circle.kernels.PairLogits` (such as
            `CirclePairLogits`): the logits and their slopes in `s`.
        ref_labels, ref_embeddings: The references the anchors are compared
            with. Defaults to the anchors themselves.
        self_index: Column of each anchor among the references (its self-pair,
            never a pair). Defaults to `arange(batch_size)` when the references
            default to the anchors, else no self-pair.
        ref_valid: Bool `(num_refs,)` marking the references that count (an
            unfilled memory slot does not), or `None` for all of them.

    Returns:
        `(losses, valid)`: per-anchor losses `(batch_size,)` (0 where invalid)
        and a bool telling which anchors have a positive and a negative.
    """
    if not isinstance(logits, kernels.PairLogits):
        raise TypeError(
            "`logits` must be a `keras_circle.kernels.PairLogits` (values and "
            f"slopes in s); received {type(logits).__name__}."
        )
    embeddings = similarity.l2_normalize(ops.cast(embeddings, "float32"))
    if ref_embeddings is not None:
        ref_embeddings = similarity.l2_normalize(ops.cast(ref_embeddings, "float32"))
    return kernels.fused_pair_softplus(
        labels,
        embeddings,
        logits,
        ref_labels,
        ref_embeddings,
        self_index,
        ref_valid=ref_valid,
    )


def _circle_per_sample(
    labels,
    embeddings,
    gamma,
    margin,
    stop_alpha_gradient,
    names=("labels", "embeddings"),
    gather=False,
):
    embeddings, factor = checked_embeddings(labels, embeddings, names)
    logits = CirclePairLogits(gamma, margin, stop_alpha_gradient)
    if gather and distribute.in_replica_context():
        # Anchors of this replica against the whole global batch.
        ref_labels, ref_embeddings, self_index = distribute.gather_references(
            labels, embeddings
        )
        losses, valid = pair_softplus_loss(
            labels, embeddings, logits, ref_labels, ref_embeddings, self_index
        )
    else:
        losses, valid = pair_softplus_loss(labels, embeddings, logits)
    return _checks.poison(losses, factor), valid


def checked_embeddings(labels, embeddings, names=("y_true", "y_pred")):
    """The checks of a pair-wise loss's inputs: float32 embeddings, poisoned.

    Rejects an empty batch and a batch size other than the labels'. Returns
    `(embeddings, factor)`: float32 embeddings multiplied by the poison factor
    of the run-time checks (so that their gradient is NaN when a check failed)
    and that factor, for the caller to poison its output with (a NaN input can
    still give a finite loss under XLA, whose reductions skip NaN).
    """
    embeddings, finite = _checks.float_matrix(embeddings, names[1])
    _checks.nonempty_batch(embeddings, labels, names[1], names[0])
    factor = _checks.combine(finite, _checks.same_batch(labels, embeddings, *names))
    return _checks.poison(embeddings, factor), factor


def pairwise_circle_loss(
    labels, embeddings, *, gamma=80.0, margin=0.4, stop_alpha_gradient=True
):
    """Circle loss with pair-wise labels, one value per anchor.

    Every other sample of the batch is a positive (same label) or a negative
    (different label) of each anchor; the self-pair is never a pair. Anchors
    without a positive or without a negative get 0.

    Args:
        labels: Integer labels, `(batch_size,)` or `(batch_size, 1)`.
        embeddings: `(batch_size, dim)`, L2-normalised here.
        gamma: Scale factor. Defaults to `80.0`.
        margin: Relaxation margin `m`. Defaults to `0.4`.
        stop_alpha_gradient: Treat `alpha_p`, `alpha_n` as constants in the
            backward pass (the paper's Eq. 9/10). Defaults to `True`.

    Returns:
        Float32 tensor `(batch_size,)`.
    """
    gamma = _checks.check_gamma(gamma)
    margin = _checks.check_margin(margin)
    labels, factor = _checks.integer_labels(labels, "labels")
    losses, _ = _circle_per_sample(
        labels, embeddings, gamma, margin, stop_alpha_gradient
    )
    return _checks.poison(losses, factor)


@keras.saving.register_keras_serializable(package="keras_circle")
class CircleLoss(CircleLossBase):
    """Circle loss for pair-wise labels (Sun et al., CVPR 2020, Eq. 6).

    Each sample of the batch is an anchor; every other sample with the same
    label is one of its positives (similarity `s_p`), every sample with another
    label one of its negatives (`s_n`). Similarities are cosines of the
    embeddings, which the loss L2-normalises itself. Each score is reweighted by
    its distance to its optimum (`alpha_p`, `alpha_n`), so that the decision
    boundary is the circle `s_n**2 + (s_p - 1)**2 = 2 * margin**2` (Eq. 8).

    What the code decides:

    - `alpha_p` and `alpha_n` are constants for back-propagation (the paper's
      Eq. 9/10). `stop_alpha_gradient=False` gives the full gradient that
      `keras.losses.Circle` computes instead.
    - Each log-sum-exp runs over its own masked set with its own maximum, so
      the loss stays finite and exact at `gamma=256` and beyond.
    - The reduced loss is the mean over the anchors that have at least one
      positive and one negative in the batch; the others contribute nothing.
      A batch without any such anchor gives 0 with zero, finite gradients.
    - Labels stay integers: any integer dtype, any value up to `2**63 - 1`.
    - Bad values never give a normal-looking loss: a NaN or infinite embedding
      or fractional labels raise eagerly and in plain graphs; under XLA and
      `jax.jit` they make the loss and its gradients NaN, even over a batch
      without valid anchors. An empty batch is an error. Embeddings of any
      scale (1e-30 to 1e30) give the same loss.
    - Under a `tf.distribute` strategy each replica's anchors are compared
      with the embeddings and labels of the global batch (all-gathered, with
      gradients) and the mean divides by the global number of valid anchors:
      a step gives the weights of the same global batch on one device.
    - Computation is float32 whatever the dtype policy (mixed precision
      included); the reduced loss is float32.

    Formula:

    ```python
    alpha_p = relu(1 + margin - s_p)          # Eq. 5, O_p = 1 + m
    alpha_n = relu(s_n + margin)              # O_n = -m
    loss = softplus(
        logsumexp(gamma * alpha_n * (s_n - margin))          # Delta_n = m
        + logsumexp(-gamma * alpha_p * (s_p - (1 - margin)))  # Delta_p = 1 - m
    )
    ```

    Args:
        gamma: Scale factor. Defaults to `80.0` (the paper's setting for
            fine-grained retrieval).
        margin: Relaxation margin `m` in `[0, 1)`. Defaults to `0.4`.
        stop_alpha_gradient: Defaults to `True`.
        reduction: Keras reduction. Defaults to `"sum_over_batch_size"`
            (the mean over valid anchors).
        name: Defaults to `"circle_loss"`.
        dtype: Accepted for Keras compatibility; computation stays float32.
            Defaults to `None`.

    Example:

    ```python
    model.compile(optimizer="adam", loss=keras_circle.CircleLoss())
    model.fit(images, integer_labels, batch_size=80)
    ```

    Reference:
        Sun et al., "Circle Loss: A Unified Perspective of Pair Similarity
        Optimization", CVPR 2020 (arXiv 2002.10857).
    """

    def __init__(
        self,
        gamma=80.0,
        margin=0.4,
        stop_alpha_gradient=True,
        reduction="sum_over_batch_size",
        name="circle_loss",
        dtype=None,
    ):
        super().__init__(gamma, margin, stop_alpha_gradient, reduction, name, dtype)

    def per_sample(self, labels, y_pred):
        return _circle_per_sample(
            labels,
            y_pred,
            self.gamma,
            self.margin,
            self.stop_alpha_gradient,
            names=("y_true", "y_pred"),
            gather=True,
        )
