"""Circle loss with class-level labels (K = 1: a softmax over reweighted cosines)."""

import keras
from keras import ops

from keras_circle import _checks
from keras_circle import class_kernel
from keras_circle import kernels
from keras_circle.losses.base import CircleLossBase
from keras_circle.losses.pairwise import CirclePairLogits
from keras_circle.losses.pairwise import circle_pair_logits


def margin_softmax_loss(labels, cosine, logits_fn, names=("labels", "cosine")):
    """Softmax cross-entropy over logits built from class cosines.

    The shared body of every class-level loss (Circle, AM-Softmax/CosFace,
    ArcFace): `logits_fn(s)` returns `(target_logits, other_logits)`, the logit
    each entry would have as the sample's own class and as another class.

    Returns:
        Float32 tensor `(batch_size,)`.
    """
    s, finite = _checks.float_matrix(cosine, names[1], "(batch_size, num_classes)")
    num_classes = s.shape[-1]
    if num_classes is None:
        num_classes = ops.shape(s)[-1]
    factor = _checks.combine(
        finite,
        _checks.same_batch(labels, s, *names),
        _checks.labels_in_range(labels, num_classes, names[0]),
        _checks.cosines_in_range(s, names[1]),
    )
    # Poisoned in and out: NaN gradients and a NaN value when a check failed.
    s = _checks.poison(s, factor)
    classes = ops.arange(num_classes, dtype=labels.dtype)
    target = ops.equal(ops.expand_dims(labels, 1), ops.expand_dims(classes, 0))
    target_logits, other_logits = logits_fn(s)
    logits = ops.where(target, target_logits, other_logits)
    picked = ops.sum(ops.where(target, logits, ops.zeros_like(logits)), axis=-1)
    return _checks.poison(ops.logsumexp(logits, axis=-1) - picked, factor)


def fused_margin_softmax_loss(labels, cosine, logits, names=("labels", "cosine")):
    """`margin_softmax_loss` with the hand-written gradient of
    `keras_circle.class_kernel`: `logits` is a `PairLogits` whose values are
    `(target_logits, other_logits)`, with their slopes. Same checks, same
    values; two reads of the cosines forward and one pass backward.

    Returns:
        Float32 tensor `(batch_size,)`.
    """
    s, _ = _checks.float_matrix(
        cosine, names[1], "(batch_size, num_classes)", finite=False
    )
    num_classes = s.shape[-1]
    if num_classes is None:
        num_classes = ops.shape(s)[-1]
    factor = _checks.combine(
        _checks.same_batch(labels, s, *names),
        _checks.labels_in_range(labels, num_classes, names[0]),
    )
    if _checks.is_concrete(s):
        # Eagerly the error can name the largest magnitude it found.
        _checks.cosines_in_range(s, names[1])
    # Traced, the range check rides on the kernel's row-maximum pass instead
    # of a pass of its own over the `(batch_size, num_classes)` cosines.
    bound = 1.0 + _checks.COSINE_TOLERANCE
    return class_kernel.margin_softmax(labels, s, logits, factor, names[1], bound)


def sampled_margin_softmax_loss(labels, cosine, logits_fn, names=("labels", "cosine")):
    """`margin_softmax_loss` over the sampled layout of `CosineProxies`.

    Row `i` of `cosine` `(batch_size, batch_size + R)` has its target in
    column `i`; `-inf` entries are no class for that row and drop out of the
    softmax (and get no gradient). With every class present once per row this
    is exactly `margin_softmax_loss` over all classes.

    The layout is checked against `labels` `(batch_size,)`: as many labels as
    rows, at least as many columns as rows, and for two samples of the same
    class, `-inf` in each other's column (the layout never counts a class
    twice). Full `(batch_size, num_classes)` cosines fail that last check as
    soon as a class occurs twice in the batch.

    Returns:
        Float32 tensor `(batch_size,)`.
    """
    s = ops.convert_to_tensor(cosine)
    if len(s.shape) != 2:
        raise ValueError(
            f"`{names[1]}` must have shape (batch_size, batch_size + R); "
            f"received shape {tuple(s.shape)}."
        )
    s = ops.cast(s, "float32")
    rows, width = _checks.static_dim(s, 0), _checks.static_dim(s, 1)
    if rows is not None and width is not None and width < rows:
        raise ValueError(
            f"`{names[1]}` must have the sampled layout (batch_size, batch_size "
            f"+ R) of `CosineProxies(...)(embeddings, labels=labels)`; received "
            f"shape {tuple(s.shape)}, fewer columns than rows."
        )
    same_batch = _checks.same_batch(labels, s, *names)
    skipped = ops.equal(s, float("-inf"))
    keep = ops.logical_not(skipped)
    rows_index = ops.arange(ops.shape(s)[0], dtype="int32")
    columns = ops.arange(ops.shape(s)[1], dtype="int32")
    target = ops.equal(rows_index[:, None], columns[None, :])
    # Two samples of one class: each one's column is -inf for the other.
    n = ops.shape(s)[0]
    if rows is None or width is None:
        n = ops.minimum(n, ops.shape(s)[1])
    twice = ops.logical_and(
        ops.equal(labels[:, None], labels[None, :n]), ops.logical_not(target[:, :n])
    )
    layout = ops.logical_and(
        ops.greater_equal(ops.shape(s)[1], ops.shape(s)[0]),
        ops.all(ops.logical_or(ops.logical_not(twice), skipped[:, :n])),
    )
    factor = _checks.combine(
        same_batch,
        # -inf marks a skipped column; NaN or +inf is still a faulty input.
        _checks.check_value(
            ops.all(ops.logical_or(ops.isfinite(s), skipped)),
            f"`{names[1]}` contains NaN or +inf values; the loss needs cosines "
            "(or -inf for a skipped column).",
            [s],
        ),
        _checks.check_value(
            layout,
            f"`{names[1]}` is not the sampled layout of `CosineProxies(...)"
            f"(embeddings, labels=labels)` for these `{names[0]}`: two samples "
            "of one class must see -inf in each other's column. Full "
            "(batch_size, num_classes) cosines need `sampled=False`.",
            [s, labels],
        ),
        _checks.cosines_in_range(s, names[1], skipped),
    )
    s = _checks.poison(s, factor)
    # Cosines only enter the logits where kept: -inf * alpha would be NaN.
    s = ops.where(keep, s, ops.zeros_like(s))
    target_logits, other_logits = logits_fn(s)
    logits = ops.where(target, target_logits, other_logits)
    logits = ops.where(keep, logits, float("-inf"))
    picked = ops.sum(ops.where(target, logits, ops.zeros_like(logits)), axis=-1)
    return _checks.poison(ops.logsumexp(logits, axis=-1) - picked, factor)


class TargetLogits(kernels.PairLogits):
    """The class-level logits of a pair-wise `PairLogits`: the target class
    enters the softmax as a positive with a plus sign, `(-logit_p, logit_n)`,
    and so do their slopes."""

    def __init__(self, pair_logits):
        self.pair_logits = pair_logits

    def values(self, s):
        logit_p, logit_n = self.pair_logits.values(s)
        return -logit_p, logit_n

    def slopes(self, s):
        slope_p, slope_n = self.pair_logits.slopes(s)
        return -slope_p, slope_n


def _circle_class_logits(gamma, margin, stop_alpha_gradient):
    def logits_fn(s):
        logit_p, logit_n = circle_pair_logits(s, gamma, margin, stop_alpha_gradient)
        # As the target the logit enters the softmax with a plus sign.
        return -logit_p, logit_n

    return logits_fn


def class_circle_loss(
    labels, cosine, *, gamma=256.0, margin=0.25, stop_alpha_gradient=True
):
    """Circle loss with class-level labels, one value per sample.

    With one positive (the sample's class proxy) Eq. 6 is a softmax
    cross-entropy over the reweighted logits `gamma * alpha_p * (s_p - delta_p)`
    for the target class and `gamma * alpha_n * (s_n - delta_n)` for the others.

    Args:
        labels: Integer class ids in `[0, num_classes)`, `(batch_size,)` or
            `(batch_size, 1)`.
        cosine: Cosine similarities to the class proxies,
            `(batch_size, num_classes)`, e.g. from `keras_circle.CosineProxies`.
        gamma: Scale factor. Defaults to `256.0`.
        margin: Relaxation margin `m`. Defaults to `0.25`.
        stop_alpha_gradient: Treat `alpha_p`, `alpha_n` as constants in the
            backward pass (Eq. 9/10). Defaults to `True`.

    Returns:
        Float32 tensor `(batch_size,)`.
    """
    gamma = _checks.check_gamma(gamma)
    margin = _checks.check_margin(margin)
    labels, factor = _checks.integer_labels(labels, "labels")
    logits = TargetLogits(CirclePairLogits(gamma, margin, stop_alpha_gradient))
    losses = fused_margin_softmax_loss(labels, cosine, logits)
    return _checks.poison(losses, factor)


@keras.saving.register_keras_serializable(package="keras_circle")
class ClassCircleLoss(CircleLossBase):
    """Circle loss for class-level labels (Sun et al., CVPR 2020, section 3.1).

    Takes the cosines between each embedding and one proxy per class (the
    output of `keras_circle.CosineProxies`) and integer class ids. The target
    class is the single positive, every other class a negative; each cosine is
    reweighted by its distance to its optimum as in the pair-wise form.

    What the code decides:

    - `alpha_p`, `alpha_n` are constants for back-propagation (Eq. 9/10);
      `stop_alpha_gradient=False` keeps their gradient.
    - Labels stay integers and must lie in `[0, num_classes)`: anything else is
      an error, never a silent loss.
    - Computation is float32 whatever the dtype policy; the reduced loss is the
      mean over the batch, in float32.
    - `sampled=True` reads the sampled layout of
      `CosineProxies(sample_fraction=...)(embeddings, labels=labels)` (Partial
      FC): column `i` is the target of sample `i`, `-inf` columns are skipped,
      every other column is a negative class. With every class in the layout
      (outside training) it equals the full loss.

    Formula:

    ```python
    target_logit = gamma * relu(1 + m - s_p) * (s_p - (1 - m))
    other_logits = gamma * relu(s_n + m) * (s_n - m)
    loss = logsumexp([target_logit, *other_logits]) - target_logit
    ```

    Args:
        gamma: Scale factor. Defaults to `256.0` (the paper's face
            recognition setting; 128 for person re-identification).
        margin: Relaxation margin `m` in `[0, 1)`. Defaults to `0.25`.
        stop_alpha_gradient: Defaults to `True`.
        sampled: Read the sampled layout of `CosineProxies` called with
            `labels`, not `(batch_size, num_classes)` cosines. Defaults to
            `False`.
        reduction: Keras reduction. Defaults to `"sum_over_batch_size"`.
        name: Defaults to `"class_circle_loss"`.
        dtype: Accepted for Keras compatibility; computation stays float32.
            Defaults to `None`.

    Example:

    ```python
    embeddings = embedder(images)
    cosine = keras_circle.CosineProxies(num_classes)(embeddings)
    trainer = keras.Model(images, cosine)
    trainer.compile(optimizer="sgd", loss=keras_circle.ClassCircleLoss())
    ```

    Reference:
        Sun et al., "Circle Loss: A Unified Perspective of Pair Similarity
        Optimization", CVPR 2020 (arXiv 2002.10857); class-level labels as in
        its face recognition experiments.
    """

    def __init__(
        self,
        gamma=256.0,
        margin=0.25,
        stop_alpha_gradient=True,
        sampled=False,
        reduction="sum_over_batch_size",
        name="class_circle_loss",
        dtype=None,
    ):
        super().__init__(gamma, margin, stop_alpha_gradient, reduction, name, dtype)
        self.sampled = bool(sampled)

    def per_sample(self, labels, y_pred):
        logits_fn = _circle_class_logits(
            self.gamma, self.margin, self.stop_alpha_gradient
        )
        names = ("y_true", "y_pred")
        if self.sampled:
            losses = sampled_margin_softmax_loss(labels, y_pred, logits_fn, names)
        else:
            logits = TargetLogits(
                CirclePairLogits(self.gamma, self.margin, self.stop_alpha_gradient)
            )
            losses = fused_margin_softmax_loss(labels, y_pred, logits, names)
        return losses, ops.ones_like(losses, dtype="bool")

    def _hyperparameters(self):
        return {**super()._hyperparameters(), "sampled": self.sampled}
