"""The losses the paper compares Circle loss against, in the same API.

Class-level (on `CosineProxies` output): AM-Softmax/CosFace and ArcFace.
Pair-wise (on embeddings): the unified pair loss of Eq. 1, and the triplet loss
(`keras_circle.losses.triplet`, re-exported here) with batch-hard or semi-hard
mining, the Keras 3 home for users of
`tfa.losses.TripletSemiHardLoss` (tensorflow-addons is end of life).
"""

import math

import keras
from keras import ops

from keras_circle import _checks
from keras_circle import kernels
from keras_circle.losses.base import IntegerLabelLoss
from keras_circle.losses.class_level import margin_softmax_loss
from keras_circle.losses.pairwise import checked_embeddings
from keras_circle.losses.pairwise import pair_softplus_loss

# The triplet loss lives in its own module; these names stay importable here.
from keras_circle.losses.triplet import TripletLoss  # noqa: F401
from keras_circle.losses.triplet import pairwise_distances  # noqa: F401
from keras_circle.losses.triplet import triplet_loss  # noqa: F401


def _am_softmax_logits(gamma, margin):
    def logits_fn(s):
        return gamma * (s - margin), gamma * s

    return logits_fn


def _arcface_logits(gamma, margin):
    cos_m, sin_m = math.cos(margin), math.sin(margin)
    # Past theta = pi - m, cos(theta + m) stops decreasing in theta; the usual
    # fix (Deng et al. 2019) continues with a linear penalty there.
    threshold = math.cos(math.pi - margin)
    linear_penalty = math.sin(math.pi - margin) * margin

    def logits_fn(s):
        sine = ops.sqrt(ops.maximum(1.0 - ops.square(s), 1e-12))
        target = ops.where(s > threshold, s * cos_m - sine * sin_m, s - linear_penalty)
        return gamma * target, gamma * s

    return logits_fn


def am_softmax_loss(labels, cosine, *, gamma=30.0, margin=0.35):
    """AM-Softmax / CosFace per sample: softmax over `gamma * (s - m * onehot)`.

    Eq. 1 of the Circle paper with class-level labels (Eq. 2); `margin=0` is
    NormFace. Returns float32 `(batch_size,)`.
    """
    gamma = _checks.check_gamma(gamma)
    margin = _checks.check_margin(margin)
    labels, factor = _checks.integer_labels(labels, "labels")
    losses = margin_softmax_loss(labels, cosine, _am_softmax_logits(gamma, margin))
    return _checks.poison(losses, factor)


def arcface_loss(labels, cosine, *, gamma=64.0, margin=0.5):
    """ArcFace per sample: softmax over `gamma * cos(theta + m)` for the target.

    Returns float32 `(batch_size,)`.
    """
    gamma = _checks.check_gamma(gamma)
    margin = _checks.check_margin(margin, upper=math.pi / 2)
    labels, factor = _checks.integer_labels(labels, "labels")
    losses = margin_softmax_loss(labels, cosine, _arcface_logits(gamma, margin))
    return _checks.poison(losses, factor)


class UnifiedPairLogits(kernels.PairLogits):
    """The logits of Eq. 1: `-gamma * s_p` and `gamma * (s_n + m)`."""

    def __init__(self, gamma, margin):
        self.gamma, self.margin = gamma, margin

    def values(self, s):
        return -self.gamma * s, self.gamma * (s + self.margin)

    def slopes(self, s):
        return ops.full_like(s, -self.gamma), ops.full_like(s, self.gamma)


def unified_pair_loss(labels, embeddings, *, gamma=80.0, margin=0.4):
    """The unified loss of Eq. 1 with pair-wise labels, per anchor.

    `log(1 + sum_i sum_j exp(gamma * (s_n^j - s_p^i + m)))`; as `gamma` grows,
    `1 / gamma` times it tends to the triplet loss with hard mining (Eq. 3).
    Returns float32 `(batch_size,)`.
    """
    gamma = _checks.check_gamma(gamma)
    margin = _checks.check_margin(margin)
    labels, label_factor = _checks.integer_labels(labels, "labels")
    embeddings, factor = checked_embeddings(
        labels, embeddings, ("labels", "embeddings")
    )
    losses, _ = pair_softplus_loss(labels, embeddings, UnifiedPairLogits(gamma, margin))
    return _checks.poison(losses, factor, label_factor)


class _GammaMarginLoss(IntegerLabelLoss):
    """A baseline loss configured by `gamma` and `margin` only."""

    def __init__(self, gamma, margin, reduction, name, dtype):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.gamma = _checks.check_gamma(gamma)
        self.margin = float(margin)

    def _hyperparameters(self):
        return {"gamma": self.gamma, "margin": self.margin}


class _MarginSoftmaxLoss(_GammaMarginLoss):
    """A class-level baseline: softmax cross-entropy over `_logits_fn()`."""

    def per_sample(self, labels, y_pred):
        losses = margin_softmax_loss(
            labels, y_pred, self._logits_fn(), ("y_true", "y_pred")
        )
        return losses, ops.ones_like(losses, dtype="bool")


@keras.saving.register_keras_serializable(package="keras_circle")
class AMSoftmaxLoss(_MarginSoftmaxLoss):
    """AM-Softmax / CosFace on `CosineProxies` output (Wang et al. 2018).

    Softmax cross-entropy over `gamma * (s - margin)` for the target class and
    `gamma * s` for the others: Eq. 1 of the Circle paper with class-level
    labels. Labels stay integers; float32 computation.

    Args:
        gamma: Scale `s`. Defaults to `30.0` (AM-Softmax; CosFace uses 64).
        margin: Additive cosine margin. Defaults to `0.35`.
        reduction: Defaults to `"sum_over_batch_size"`.
        name: Defaults to `"am_softmax_loss"`.
        dtype: Computation stays float32. Defaults to `None`.

    Example:

    ```python
    trainer.compile(optimizer="sgd", loss=keras_circle.AMSoftmaxLoss())
    ```

    Reference:
        Wang et al., "Additive Margin Softmax for Face Verification", 2018;
        Wang et al., "CosFace", CVPR 2018.
    """

    def __init__(
        self,
        gamma=30.0,
        margin=0.35,
        reduction="sum_over_batch_size",
        name="am_softmax_loss",
        dtype=None,
    ):
        super().__init__(gamma, _checks.check_margin(margin), reduction, name, dtype)

    def _logits_fn(self):
        return _am_softmax_logits(self.gamma, self.margin)


CosFaceLoss = AMSoftmaxLoss


@keras.saving.register_keras_serializable(package="keras_circle")
class ArcFaceLoss(_MarginSoftmaxLoss):
    """ArcFace on `CosineProxies` output (Deng et al., CVPR 2019).

    Softmax cross-entropy over `gamma * cos(theta_y + margin)` for the target
    class and `gamma * cos(theta_j)` for the others, with the usual linear
    continuation once `theta_y + margin` passes pi.

    Args:
        gamma: Scale `s`. Defaults to `64.0`.
        margin: Additive angular margin in radians. Defaults to `0.5`.
        reduction: Defaults to `"sum_over_batch_size"`.
        name: Defaults to `"arcface_loss"`.
        dtype: Computation stays float32. Defaults to `None`.

    Example:

    ```python
    trainer.compile(optimizer="sgd", loss=keras_circle.ArcFaceLoss())
    ```

    Reference:
        Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face
        Recognition", CVPR 2019.
    """

    def __init__(
        self,
        gamma=64.0,
        margin=0.5,
        reduction="sum_over_batch_size",
        name="arcface_loss",
        dtype=None,
    ):
        super().__init__(
            gamma,
            _checks.check_margin(margin, upper=math.pi / 2),
            reduction,
            name,
            dtype,
        )

    def _logits_fn(self):
        return _arcface_logits(self.gamma, self.margin)


@keras.saving.register_keras_serializable(package="keras_circle")
class UnifiedPairLoss(_GammaMarginLoss):
    """The unified pair loss of Eq. 1 (Sun et al. 2020) on embeddings.

    `log(1 + sum_i sum_j exp(gamma * (s_n^j - s_p^i + m)))` per anchor, same
    masks and reduction as `CircleLoss` (mean over anchors that have a positive
    and a negative).

    Args:
        gamma: Scale factor. Defaults to `80.0`.
        margin: Margin `m`. Defaults to `0.4`.
        reduction: Defaults to `"sum_over_batch_size"`.
        name: Defaults to `"unified_pair_loss"`.
        dtype: Computation stays float32. Defaults to `None`.

    Example:

    ```python
    model.compile(optimizer="adam", loss=keras_circle.UnifiedPairLoss())
    ```

    Reference:
        Sun et al., "Circle Loss", CVPR 2020, Eq. 1.
    """

    def __init__(
        self,
        gamma=80.0,
        margin=0.4,
        reduction="sum_over_batch_size",
        name="unified_pair_loss",
        dtype=None,
    ):
        super().__init__(gamma, _checks.check_margin(margin), reduction, name, dtype)

    def per_sample(self, labels, y_pred):
        y_pred, factor = checked_embeddings(labels, y_pred)
        losses, valid = pair_softplus_loss(
            labels, y_pred, UnifiedPairLogits(self.gamma, self.margin)
        )
        return _checks.poison(losses, factor), valid
