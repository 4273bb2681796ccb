"""Training diagnostics: the similarity statistics people tune Circle loss by.

`circle_statistics(margin)` gives four Keras metrics for pair-wise training
(embeddings and integer labels): `valid_anchors`, `mean_s_p`, `mean_s_n` and
`outside_circle`. `class_circle_statistics()` gives two for class-level
training on `CosineProxies` cosines: `mean_target_cosine` and
`mean_hardest_negative_cosine`. They are plain `keras.metrics.Metric`
objects, so `model.compile(loss=..., metrics=...)` shows them in the progress
bar, `History`, `CSVLogger` and `TensorBoard`.

Each metric accumulates a numerator and a denominator over the epoch, so its
value is the statistic of every anchor seen so far, not a mean of batch
means. Under a `tf.distribute` strategy each replica's anchors are compared
with the whole global batch (as `CircleLoss` does) and the sums are added
over the replicas, so the values are those of the global batch on one
device. Math in `keras.ops`: they run on every Keras backend.
"""

import keras
from keras import ops

from keras_circle import _checks
from keras_circle import distribute
from keras_circle import similarity


def _anchor_weights(sample_weight, batch):
    """Per-anchor float32 weights `(batch_size,)` (ones without weights)."""
    if sample_weight is None:
        return ops.ones((batch,), "float32")
    weights = ops.cast(ops.convert_to_tensor(sample_weight), "float32")
    if len(weights.shape) == 2 and weights.shape[1] == 1:
        weights = ops.reshape(weights, (-1,))
    if len(weights.shape) > 1:
        raise ValueError(
            "`sample_weight` must be a scalar or have shape (batch_size,) or "
            f"(batch_size, 1); received shape {tuple(weights.shape)}."
        )
    return ops.broadcast_to(weights, (batch,))


def _finite_factor(x):
    """1 where every entry of `x` is finite, else NaN: a NaN input gives NaN."""
    return ops.where(ops.all(ops.isfinite(x)), 1.0, float("nan"))


def pair_statistics(labels, embeddings, margin=0.4):
    """Per-anchor pair statistics of a batch (of the global batch under a strategy).

    Each anchor is compared with every other sample of the batch: those with
    its label are its positives, the others its negatives (the masks of
    `CircleLoss`). Inside a `tf.distribute` replica context the local anchors
    are compared with the all-gathered global batch.

    Args:
        labels: Integer labels `(batch_size,)` or `(batch_size, 1)`.
        embeddings: `(batch_size, dim)`, any scale (L2-normalised here).
        margin: The relaxation margin `m` of the Eq. 8 circle. Defaults to
            `0.4`.

    Returns:
        A dict of float32 `(batch_size,)` tensors: `valid` (1 for an anchor
        with a positive and a negative, else 0), `s_p` and `s_n` (the mean
        cosine to its positives and to its negatives, 0 where it has none),
        `outside` (1 when a valid anchor's `(s_n, s_p)` lies outside the
        circle `s_n**2 + (s_p - 1)**2 = 2 m**2`, NaN when its means are NaN),
        and `finite`, a float32 scalar: 1, or NaN when one of this batch's
        (this replica's) embeddings is NaN or infinite.
    """
    labels, label_factor = _checks.integer_labels(labels, "y_true")
    embeddings = ops.cast(ops.convert_to_tensor(embeddings), "float32")
    # The local embeddings, not the similarities: `valid_anchors` then needs
    # no product (a NaN on another replica reaches this one through the sums
    # over replicas).
    finite = _checks.combine(_finite_factor(embeddings), label_factor)
    x = similarity.l2_normalize(embeddings)
    if distribute.in_replica_context():
        ref_labels, refs, self_index = distribute.gather_references(labels, x)
    else:
        ref_labels, refs = labels, x
        self_index = ops.arange(ops.shape(labels)[0], dtype="int32")
    s = ops.matmul(x, ops.transpose(refs))
    positive, negative = similarity.pair_masks(labels, ref_labels, self_index)
    zeros = ops.zeros_like(s)
    n_p = ops.sum(ops.cast(positive, "float32"), axis=1)
    n_n = ops.sum(ops.cast(negative, "float32"), axis=1)
    s_p = ops.sum(ops.where(positive, s, zeros), axis=1) / ops.maximum(n_p, 1.0)
    s_n = ops.sum(ops.where(negative, s, zeros), axis=1) / ops.maximum(n_n, 1.0)
    valid = ops.logical_and(n_p > 0, n_n > 0)
    # Eq. 8: the decision circle around the optimum (s_n, s_p) = (0, 1).
    distance = ops.square(s_n) + ops.square(s_p - 1.0)
    outside = ops.where(
        ops.isnan(distance),
        distance,
        ops.cast(distance > 2.0 * margin**2, "float32"),
    )
    return {
        "valid": ops.cast(valid, "float32"),
        "s_p": s_p,
        "s_n": s_n,
        "outside": outside,
        "finite": finite,
    }


def class_statistics(labels, cosine, sampled=False):
    """Per-sample target and hardest-negative cosines of class-level output.

    Args:
        labels: Integer class ids `(batch_size,)` or `(batch_size, 1)`.
        cosine: Cosines to the class proxies `(batch_size, num_classes)`, the
            output of `keras_circle.CosineProxies`; with `sampled=True` its
            sampled layout `(batch_size, batch_size + R)` (target of row `i`
            in column `i`, `-inf` for a skipped column).
        sampled: Read the sampled layout. Defaults to `False`.

    Returns:
        A dict of float32 `(batch_size,)` tensors: `target` (the cosine to the
        sample's own class, `s_p`), `hardest` (the largest cosine to another
        class, `s_n`; `-1` with one class only) and `finite` (a scalar: 1, or
        NaN when a cosine is NaN or `+inf`).
    """
    labels, label_factor = _checks.integer_labels(labels, "y_true")
    s = ops.cast(ops.convert_to_tensor(cosine), "float32")
    if len(s.shape) != 2:
        raise ValueError(
            "`y_pred` must hold the cosines of `CosineProxies`, shape "
            f"(batch_size, num_classes); received shape {tuple(s.shape)}."
        )
    rows = ops.arange(ops.shape(s)[0], dtype="int32")
    columns = ops.arange(ops.shape(s)[1], dtype="int32")
    if sampled:
        target = ops.equal(rows[:, None], columns[None, :])
    else:
        target = ops.equal(
            ops.cast(labels, "int32")[:, None], ops.cast(columns, "int32")[None, :]
        )
    skipped = ops.equal(s, float("-inf"))
    finite = _checks.combine(
        _finite_factor(ops.where(skipped, ops.zeros_like(s), s)), label_factor
    )
    picked = ops.sum(ops.where(target, s, ops.zeros_like(s)), axis=1)
    others = ops.where(
        ops.logical_or(target, skipped), ops.full_like(s, float("-inf")), s
    )
    hardest = ops.max(others, axis=1)
    hardest = ops.where(ops.isfinite(hardest), hardest, -ops.ones_like(hardest))
    return {"target": picked, "hardest": hardest, "finite": finite}


class _RatioMetric(keras.metrics.Metric):
    """A metric `sum(numerator) / sum(denominator)` over every batch seen.

    Subclasses implement `terms(y_true, y_pred)` returning per-anchor float32
    `(numerator, denominator)` `(batch_size,)` and a NaN-or-1 factor. With a
    zero denominator the result is 0 (NaN if a NaN was accumulated).
    """

    def __init__(self, name, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.numerator = self.add_variable((), "zeros", "float32", name="numerator")
        self.denominator = self.add_variable((), "zeros", "float32", name="denominator")

    def terms(self, y_true, y_pred):
        raise NotImplementedError

    def update_state(self, y_true, y_pred, sample_weight=None):
        numerator, denominator, finite = self.terms(y_true, y_pred)
        weights = _anchor_weights(sample_weight, ops.shape(numerator)[0])
        numerator = ops.sum(numerator * weights) * finite
        denominator = ops.sum(denominator * weights) * finite
        if distribute.in_replica_context():
            # Every replica adds the global sums: each then reports the
            # global value, and Keras's mean over replicas keeps it.
            numerator = distribute.global_sum(numerator)
            denominator = distribute.global_sum(denominator)
        self.numerator.assign(self.numerator + numerator)
        self.denominator.assign(self.denominator + denominator)

    def result(self):
        d = ops.convert_to_tensor(self.denominator)
        return ops.convert_to_tensor(self.numerator) / ops.where(
            d > 0, d, ops.ones_like(d)
        )

    def reset_state(self):
        self.numerator.assign(0.0)
        self.denominator.assign(0.0)


class _PairRatio(_RatioMetric):
    def __init__(self, margin=0.4, name=None, dtype=None):
        self.margin = _checks.check_margin(margin)
        super().__init__(name=name, dtype=dtype)

    def terms(self, y_true, y_pred):
        stats = pair_statistics(y_true, y_pred, self.margin)
        numerator, denominator = self.pick(stats)
        return numerator, denominator, stats["finite"]

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


@keras.saving.register_keras_serializable(package="keras_circle")
class ValidAnchors(_PairRatio):
    """Fraction of anchors with at least one positive and one negative in the batch.

    Only those anchors have a Circle loss (the others contribute nothing).
    Near 1 with P x K batches (`keras_circle.data.pk_batches`, K >= 2); near
    0 with random batches over many classes, where most anchors have no
    positive. Weighted by `sample_weight` when given.

    Args:
        margin: Unused here; kept so that every pair-wise statistic takes the
            same arguments. Defaults to `0.4`.
        name: Defaults to `"valid_anchors"`.
        dtype: Defaults to `None`.
    """

    def __init__(self, margin=0.4, name="valid_anchors", dtype=None):
        super().__init__(margin, name, dtype)

    def pick(self, stats):
        return stats["valid"], ops.ones_like(stats["valid"])


@keras.saving.register_keras_serializable(package="keras_circle")
class MeanPositiveSimilarity(_PairRatio):
    """`mean_s_p`: mean cosine similarity of an anchor to its positives.

    Per anchor, the mean cosine to the other samples of its class; then the
    mean of those over the valid anchors (each anchor weighs the same, as in
    the loss's mean). 0 while no valid anchor has been seen.

    Args:
        margin: Unused here. Defaults to `0.4`.
        name: Defaults to `"mean_s_p"`.
        dtype: Defaults to `None`.
    """

    def __init__(self, margin=0.4, name="mean_s_p", dtype=None):
        super().__init__(margin, name, dtype)

    def pick(self, stats):
        return stats["valid"] * stats["s_p"], stats["valid"]


@keras.saving.register_keras_serializable(package="keras_circle")
class MeanNegativeSimilarity(_PairRatio):
    """`mean_s_n`: mean cosine similarity of an anchor to its negatives.

    Per anchor, the mean cosine to the samples of other classes; then the
    mean of those over the valid anchors. 0 while no valid anchor has been
    seen.

    Args:
        margin: Unused here. Defaults to `0.4`.
        name: Defaults to `"mean_s_n"`.
        dtype: Defaults to `None`.
    """

    def __init__(self, margin=0.4, name="mean_s_n", dtype=None):
        super().__init__(margin, name, dtype)

    def pick(self, stats):
        return stats["valid"] * stats["s_n"], stats["valid"]


@keras.saving.register_keras_serializable(package="keras_circle")
class OutsideCircle(_PairRatio):
    """Fraction of valid anchors whose mean `(s_n, s_p)` lies outside Eq. 8's circle.

    The decision boundary of Circle loss with margin `m` is the circle
    `s_n**2 + (s_p - 1)**2 = 2 m**2` around the optimum `(0, 1)` (Eq. 8);
    an anchor is outside when its mean negative and mean positive cosines
    (`mean_s_n`, `mean_s_p` of that anchor) lie on or beyond it. 0 while no
    valid anchor has been seen.

    Args:
        margin: The relaxation margin `m` of the loss. Defaults to `0.4`.
        name: Defaults to `"outside_circle"`.
        dtype: Defaults to `None`.

    Reference:
        Sun et al., "Circle Loss", CVPR 2020, Eq. 8.
    """

    def __init__(self, margin=0.4, name="outside_circle", dtype=None):
        super().__init__(margin, name, dtype)

    def pick(self, stats):
        # `where`, not a product: a NaN mean stays NaN for a valid anchor,
        # and an invalid anchor's 0 means say nothing.
        valid = stats["valid"] > 0
        outside = ops.where(valid, stats["outside"], ops.zeros_like(stats["valid"]))
        return outside, stats["valid"]


class _ClassRatio(_RatioMetric):
    def __init__(self, sampled=False, name=None, dtype=None):
        self.sampled = bool(sampled)
        super().__init__(name=name, dtype=dtype)

    def terms(self, y_true, y_pred):
        stats = class_statistics(y_true, y_pred, self.sampled)
        value = stats[self.statistic]
        return value, ops.ones_like(value), stats["finite"]

    def get_config(self):
        return {**super().get_config(), "sampled": self.sampled}


@keras.saving.register_keras_serializable(package="keras_circle")
class MeanTargetCosine(_ClassRatio):
    """Mean cosine of each sample to its own class proxy (`s_p`, class level).

    `y_pred` is the output of `keras_circle.CosineProxies`, `y_true` the
    class ids.

    Args:
        sampled: `y_pred` is the sampled layout of `CosineProxies(...)(x,
            labels=labels)` (Partial FC). Defaults to `False`.
        name: Defaults to `"mean_target_cosine"`.
        dtype: Defaults to `None`.
    """

    statistic = "target"

    def __init__(self, sampled=False, name="mean_target_cosine", dtype=None):
        super().__init__(sampled, name, dtype)


@keras.saving.register_keras_serializable(package="keras_circle")
class MeanHardestNegativeCosine(_ClassRatio):
    """Mean over samples of the largest cosine to another class's proxy.

    The hardest negative `s_n` of each sample (`-1` with a single class).

    Args:
        sampled: `y_pred` is the sampled layout of `CosineProxies`. Defaults
            to `False`.
        name: Defaults to `"mean_hardest_negative_cosine"`.
        dtype: Defaults to `None`.
    """

    statistic = "hardest"

    def __init__(self, sampled=False, name="mean_hardest_negative_cosine", dtype=None):
        super().__init__(sampled, name, dtype)


def circle_statistics(margin=0.4):
    """The four training diagnostics of pair-wise training, as Keras metrics.

    - `valid_anchors`: fraction of anchors with at least one positive and one
      negative in their batch (the anchors that have a loss).
    - `mean_s_p`, `mean_s_n`: per anchor, the mean cosine similarity to its
      positives and to its negatives; averaged over the valid anchors.
    - `outside_circle`: fraction of valid anchors whose `(mean s_n, mean s_p)`
      lies outside the decision circle `s_n**2 + (s_p - 1)**2 = 2 m**2`
      (Eq. 8) for `margin`.

    While no valid anchor has been seen, the last three read 0 (and
    `valid_anchors` says why). A NaN or infinite embedding makes all four
    NaN. `valid_anchors` reads the labels only; the other three each need
    the `(batch, batch)` cosine matrix, whose identical products graph
    optimisers (Grappler, XLA) may merge.

    Args:
        margin: The relaxation margin `m` of the loss. Defaults to `0.4`.

    Returns:
        A list of four `keras.metrics.Metric`.

    Example:

    ```python
    model.compile(
        optimizer="adam",
        loss=keras_circle.CircleLoss(margin=0.4),
        metrics=keras_circle.metrics.circle_statistics(margin=0.4),
    )
    ```
    """
    margin = _checks.check_margin(margin)
    return [
        ValidAnchors(margin),
        MeanPositiveSimilarity(margin),
        MeanNegativeSimilarity(margin),
        OutsideCircle(margin),
    ]


def class_circle_statistics(sampled=False):
    """The training diagnostics of class-level training, as Keras metrics.

    `mean_target_cosine` (the mean `s_p`: cosine to the sample's own class
    proxy) and `mean_hardest_negative_cosine` (the mean over samples of the
    largest cosine to another class). `y_pred` is the cosine output of
    `keras_circle.CosineProxies`.

    Args:
        sampled: `y_pred` is the sampled layout of `CosineProxies` (Partial
            FC, `ClassCircleLoss(sampled=True)`). Defaults to `False`.

    Returns:
        A list of two `keras.metrics.Metric`.

    Example:

    ```python
    trainer.compile(
        optimizer="sgd",
        loss=keras_circle.ClassCircleLoss(),
        metrics=keras_circle.metrics.class_circle_statistics(),
    )
    ```
    """
    return [MeanTargetCosine(sampled), MeanHardestNegativeCosine(sampled)]
