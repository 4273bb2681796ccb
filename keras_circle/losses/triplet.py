"""Triplet loss with in-batch mining (FaceNet semi-hard, batch-hard) and distances.

The Keras 3 home for users of `tfa.losses.TripletSemiHardLoss`
(tensorflow-addons is end of life), in the API of the other losses.
"""

import math
import numbers

import keras
import numpy as np
from keras import ops

from keras_circle import _checks
from keras_circle import similarity
from keras_circle.losses.base import IntegerLabelLoss
from keras_circle.losses.pairwise import checked_embeddings

_DISTANCES = ("l2", "squared_l2", "angular")
_MININGS = ("semi_hard", "batch_hard")


# Embeddings with a magnitude above this are rescaled before their distances
# are squared: (2 * 1e15)**2 times a dimension up to 1e7 stays below the
# float32 maximum (3.4e38). Below it nothing is rescaled (values unchanged).
_LARGE = 1e15


def _distance_unit(embeddings, distance):
    """`(scale, power)`: distances are those of `embeddings / scale` times
    `scale**power`; `scale` is 1 unless the magnitudes would overflow."""
    if distance == "angular":
        return None, 0
    largest = ops.stop_gradient(ops.max(ops.abs(embeddings)))
    scale = ops.where(largest > _LARGE, largest, ops.ones_like(largest))
    return scale, 1 if distance == "l2" else 2


def _unit_distances(embeddings, distance):
    if distance == "angular":
        e = similarity.l2_normalize(embeddings)
        return 1.0 - ops.matmul(e, ops.transpose(e))
    sq = ops.sum(ops.square(embeddings), axis=1)
    d2 = ops.expand_dims(sq, 1) + ops.expand_dims(sq, 0)
    d2 = ops.maximum(d2 - 2.0 * ops.matmul(embeddings, ops.transpose(embeddings)), 0.0)
    if distance == "squared_l2":
        return d2
    # sqrt has an infinite gradient at 0 (the diagonal): route zeros around it.
    zero = ops.equal(d2, 0.0)
    return ops.where(zero, 0.0, ops.sqrt(ops.where(zero, 1.0, d2)))


def _times_unit(x, scale, power):
    """`x * scale**power` without forming `scale**power` (which may overflow)."""
    for _ in range(power):
        x = x * scale
    return x


def pairwise_distances(embeddings, distance="l2"):
    """Distances `(batch, batch)`: `"l2"`, `"squared_l2"` or `"angular"` (1 - cos).

    Embeddings too large to square in float32 (magnitudes above 1e15) are
    rescaled first, so that `"l2"` stays finite wherever the distance is;
    `"squared_l2"` is `inf` only where the true value exceeds float32.
    """
    scale, power = _distance_unit(embeddings, distance)
    if scale is None:
        return _unit_distances(embeddings, distance)
    d = _unit_distances(embeddings / scale, distance)
    return _times_unit(d, scale, power)


def _triplet_per_sample(
    labels,
    embeddings,
    margin,
    mining,
    distance,
    l2_normalize,
    names=("y_true", "y_pred"),
):
    embeddings, factor = checked_embeddings(labels, embeddings, names)
    if l2_normalize:
        embeddings = similarity.l2_normalize(embeddings)
    # Hinges in units of `scale**power` (1 unless the embeddings are huge):
    # no `inf - inf` between two overflowing distances, and the loss is
    # `inf` only where its true value exceeds float32.
    scale, power = _distance_unit(embeddings, distance)
    if scale is None:
        d = _unit_distances(embeddings, distance)
    else:
        d = _unit_distances(embeddings / scale, distance)
        for _ in range(power):
            margin = margin / scale
    self_index = ops.arange(ops.shape(labels)[0], dtype="int32")
    positive, negative = similarity.pair_masks(labels, labels, self_index)
    has_p, has_n = ops.any(positive, axis=1), ops.any(negative, axis=1)
    valid = ops.logical_and(has_p, has_n)
    big = ops.max(d) + 1.0
    if mining == "batch_hard":
        # Hermans et al. 2017: hardest positive against hardest negative.
        hardest_p = ops.max(ops.where(positive, d, 0.0), axis=1)
        hardest_n = ops.min(ops.where(negative, d, big), axis=1)
        losses = ops.relu(hardest_p - hardest_n + margin)
    else:
        # Schroff et al. 2015 (FaceNet), as tfa.losses.TripletSemiHardLoss: for
        # each positive pair (a, p) the closest negative farther than p, else
        # the farthest negative. O(batch**3) booleans.
        d_ap = ops.expand_dims(d, 2)  # [a, p, 1]
        d_an = ops.expand_dims(d, 1)  # [a, 1, n]
        farther = ops.logical_and(ops.expand_dims(negative, 1), d_an > d_ap)
        semi_hard = ops.min(ops.where(farther, d_an, big), axis=2)
        farthest = ops.max(ops.where(negative, d, -big), axis=1, keepdims=True)
        chosen = ops.where(ops.any(farther, axis=2), semi_hard, farthest)
        hinge = ops.where(positive, ops.relu(d - chosen + margin), 0.0)
        count = ops.maximum(ops.sum(ops.cast(positive, "float32"), axis=1), 1.0)
        losses = ops.sum(hinge, axis=1) / count
    if scale is not None:
        losses = _times_unit(losses, scale, power)
    return _checks.poison(ops.where(valid, losses, 0.0), factor), valid


def triplet_loss(
    labels,
    embeddings,
    *,
    margin=1.0,
    mining="semi_hard",
    distance="l2",
    l2_normalize=False,
):
    """Triplet loss with in-batch mining, per anchor (mean over its positives).

    Args:
        labels: Integer labels `(batch_size,)`.
        embeddings: `(batch_size, dim)`.
        margin: Hinge margin, a finite number >= 0. Defaults to `1.0` (as
            tfa's TripletSemiHardLoss).
        mining: `"semi_hard"` (FaceNet) or `"batch_hard"` (Hermans et al.).
            Defaults to `"semi_hard"`.
        distance: `"l2"`, `"squared_l2"` or `"angular"`. Defaults to `"l2"`.
        l2_normalize: Normalise embeddings first. Defaults to `False`.

    Returns:
        Float32 tensor `(batch_size,)`; 0 for anchors without a positive or a
        negative.
    """
    margin = _check_triplet_options(mining, distance, margin)
    labels, factor = _checks.integer_labels(labels, "labels")
    names = ("labels", "embeddings")
    losses, _ = _triplet_per_sample(
        labels, embeddings, margin, mining, distance, l2_normalize, names
    )
    return _checks.poison(losses, factor)


def _check_triplet_options(mining, distance, margin):
    if mining not in _MININGS:
        raise ValueError(f"`mining` must be one of {_MININGS}; received {mining!r}.")
    if distance not in _DISTANCES:
        raise ValueError(
            f"`distance` must be one of {_DISTANCES}; received {distance!r}."
        )
    if (
        isinstance(margin, (bool, np.bool_))
        or not isinstance(margin, numbers.Real)
        or not math.isfinite(margin)
        or margin < 0
    ):
        raise ValueError(f"`margin` must be a finite number >= 0; received {margin!r}.")
    return float(margin)


@keras.saving.register_keras_serializable(package="keras_circle")
class TripletLoss(IntegerLabelLoss):
    """Triplet loss with batch-hard or semi-hard mining (Keras 3, integer labels).

    A drop-in home for `tfa.losses.TripletSemiHardLoss` users: the defaults
    (`margin=1.0`, `mining="semi_hard"`, `distance="l2"`, no normalisation)
    follow it. Per anchor, the hinge `relu(d_ap - d_an + margin)` is averaged
    over the anchor's positives; the reduction averages over anchors with a
    positive and a negative. With P x K batches (every anchor has K - 1
    positives) this equals tfa's mean over all positive pairs.

    Without normalisation, embeddings too large to square in float32 are
    handled in rescaled units: `"l2"` stays finite, a `"squared_l2"` value
    beyond float32 is `inf` (never NaN). NaN inputs and bad labels raise, or
    give NaN under XLA and `jax.jit`, as for every loss here.

    Args:
        margin: A finite number >= 0. Defaults to `1.0`.
        mining: `"semi_hard"` or `"batch_hard"`. Defaults to `"semi_hard"`.
        distance: `"l2"`, `"squared_l2"` or `"angular"`. Defaults to `"l2"`.
        l2_normalize: Normalise embeddings first. Defaults to `False`.
        reduction: Defaults to `"sum_over_batch_size"`.
        name: Defaults to `"triplet_loss"`.
        dtype: Computation stays float32. Defaults to `None`.

    Example:

    ```python
    model.compile(optimizer="adam", loss=keras_circle.TripletLoss())
    ```

    Reference:
        Schroff et al., "FaceNet", CVPR 2015; Hermans et al., "In Defense of
        the Triplet Loss for Person Re-Identification", 2017.
    """

    def __init__(
        self,
        margin=1.0,
        mining="semi_hard",
        distance="l2",
        l2_normalize=False,
        reduction="sum_over_batch_size",
        name="triplet_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.margin = _check_triplet_options(mining, distance, margin)
        self.mining = mining
        self.distance = distance
        self.l2_normalize = bool(l2_normalize)

    def per_sample(self, labels, y_pred):
        return _triplet_per_sample(
            labels, y_pred, self.margin, self.mining, self.distance, self.l2_normalize
        )

    def _hyperparameters(self):
        return {
            "margin": self.margin,
            "mining": self.mining,
            "distance": self.distance,
            "l2_normalize": self.l2_normalize,
        }
