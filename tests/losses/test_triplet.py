"""The triplet loss (keras_circle.losses.triplet) against float64 references."""

import keras
import numpy as np
import pytest

import keras_circle
from keras_circle.losses import triplet_loss
from keras_circle.testing import reference
from keras_circle.testing.backend import jit
from keras_circle.testing.backend import value_and_grad
from tests.conftest import NEEDS_XLA
from tests.losses.test_pairwise import make_batch

pytestmark = pytest.mark.backend_agnostic


@pytest.mark.parametrize("mining", ["semi_hard", "batch_hard"])
@pytest.mark.parametrize("distance", ["l2", "squared_l2", "angular"])
def test_triplet_correctness(rng, mining, distance):
    labels, embeddings = make_batch(rng, batch=12)
    expected = reference.triplet(labels, embeddings, 1.0, mining, distance)
    actual = keras.ops.convert_to_numpy(
        triplet_loss(labels, embeddings, mining=mining, distance=distance)
    )
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)
    value, (grad,) = value_and_grad(
        lambda e: keras_circle.TripletLoss(mining=mining, distance=distance)(labels, e),
        embeddings,
    )
    valid = np.array([np.sum(labels == y) > 1 for y in labels])
    assert value == pytest.approx(expected[valid].mean(), rel=1e-4)
    assert np.all(np.isfinite(grad))


def test_triplet_equals_tfa_mean_on_pk_batches(rng):
    """With P x K batches the mean over anchors is tfa's mean over positive pairs."""
    labels = np.repeat(np.arange(4), 3)
    embeddings = rng.normal(size=(12, 6)).astype("float32")
    per_anchor = reference.triplet(labels, embeddings, 1.0, "semi_hard")
    value = keras_circle.TripletLoss()(labels, embeddings)
    assert float(value) == pytest.approx(per_anchor.mean(), rel=1e-5)


@NEEDS_XLA
def test_xla_matches_eager(rng):
    labels, embeddings = make_batch(rng)
    for loss in (
        keras_circle.TripletLoss(),
        keras_circle.TripletLoss(mining="batch_hard"),
    ):
        eager = float(loss(labels, embeddings))
        compiled = float(jit(lambda a, b, loss=loss: loss(a, b))(labels, embeddings))
        assert compiled == pytest.approx(eager, rel=1e-5, abs=1e-6), loss.name


def test_bad_options():
    with pytest.raises(ValueError, match="mining"):
        keras_circle.TripletLoss(mining="hardest")
    with pytest.raises(ValueError, match="distance"):
        keras_circle.TripletLoss(distance="cosine")


def test_config():
    loss = keras_circle.TripletLoss(margin=0.2, mining="batch_hard", distance="angular")
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(clone) is type(loss)
    assert clone.get_config() == loss.get_config()
