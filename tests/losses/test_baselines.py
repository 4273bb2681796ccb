"""The paper's baselines against float64 references (the triplet loss: test_triplet.py)."""

import math

import keras
import numpy as np
import pytest

import keras_circle
from keras_circle.losses import am_softmax_loss
from keras_circle.losses import arcface_loss
from keras_circle.losses import unified_pair_loss
from keras_circle.testing import reference
from keras_circle.testing.backend import jit
from keras_circle.testing.backend import value_and_grad
from tests.conftest import NEEDS_XLA
from tests.losses.test_class_level import make_cosine
from tests.losses.test_pairwise import make_batch
from tests.losses.test_pairwise import rel_diff

pytestmark = pytest.mark.backend_agnostic


def arcface_target(margin):
    def target(s):
        theta = math.acos(min(max(s, -1.0), 1.0))
        if theta + margin <= math.pi:
            return math.cos(theta + margin)
        return s - math.sin(math.pi - margin) * margin

    return target


def test_am_softmax_correctness(rng):
    labels, cosine = make_cosine(rng)
    expected = reference.margin_softmax(labels, cosine, lambda s: s - 0.35, 30.0)
    actual = keras.ops.convert_to_numpy(am_softmax_loss(labels, cosine))
    assert rel_diff(actual, expected) < 1e-5
    value = keras_circle.AMSoftmaxLoss()(labels, cosine)
    assert float(value) == pytest.approx(expected.mean(), rel=1e-5)
    assert keras_circle.CosFaceLoss is keras_circle.AMSoftmaxLoss


def test_arcface_correctness(rng):
    labels, cosine = make_cosine(rng)
    cosine[0, labels[0]] = -0.99  # theta + m past pi: the linear branch
    expected = reference.margin_softmax(labels, cosine, arcface_target(0.5), 64.0)
    actual = keras.ops.convert_to_numpy(arcface_loss(labels, cosine))
    assert rel_diff(actual, expected) < 1e-5
    _, (grad,) = value_and_grad(lambda s: keras_circle.ArcFaceLoss()(labels, s), cosine)
    assert np.all(np.isfinite(grad))


def test_unified_pair_loss_correctness(rng):
    labels, embeddings = make_batch(rng, batch=10)
    expected = reference.unified_pairs(labels, embeddings, 80.0, 0.4)
    actual = keras.ops.convert_to_numpy(unified_pair_loss(labels, embeddings))
    assert rel_diff(actual, expected) < 1e-5


def test_unified_tends_to_hard_triplet(rng):
    """Eq. 3: 1/gamma * Eq. 1 -> max(s_n) - min(s_p) + m (hinged) as gamma grows."""
    labels, embeddings = make_batch(rng, batch=10)
    gamma, margin = 4096.0, 0.4
    u = reference.normalize(embeddings)
    s = u @ u.T
    actual = (
        keras.ops.convert_to_numpy(
            unified_pair_loss(labels, embeddings, gamma=gamma, margin=margin)
        )
        / gamma
    )
    for i in range(len(labels)):
        pos = [j for j in range(len(labels)) if j != i and labels[j] == labels[i]]
        neg = [j for j in range(len(labels)) if labels[j] != labels[i]]
        if pos and neg:
            hard = max(max(s[i, neg]) - min(s[i, pos]) + margin, 0.0)
            assert actual[i] == pytest.approx(hard, abs=2e-3)


@NEEDS_XLA
def test_xla_matches_eager(rng):
    labels, embeddings = make_batch(rng)
    cl, cosine = make_cosine(rng)
    cases = [
        (keras_circle.AMSoftmaxLoss(), cl, cosine),
        (keras_circle.ArcFaceLoss(), cl, cosine),
        (keras_circle.UnifiedPairLoss(), labels, embeddings),
    ]
    for loss, y, x in cases:
        eager = float(loss(y, x))
        compiled = float(jit(lambda a, b, loss=loss: loss(a, b))(y, x))
        assert compiled == pytest.approx(eager, rel=1e-5, abs=1e-6), loss.name


def test_bad_options():
    with pytest.raises(ValueError, match="margin"):
        keras_circle.ArcFaceLoss(margin=2.0)
    with pytest.raises(ValueError, match="gamma"):
        keras_circle.AMSoftmaxLoss(gamma=0)


@pytest.mark.parametrize(
    "loss",
    [
        keras_circle.AMSoftmaxLoss(gamma=64.0, margin=0.2),
        keras_circle.ArcFaceLoss(gamma=32.0, margin=0.3),
        keras_circle.UnifiedPairLoss(gamma=32.0, margin=0.1),
    ],
    ids=lambda loss: type(loss).__name__,
)
def test_config(loss):
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(clone) is type(loss)
    assert clone.get_config() == loss.get_config()
