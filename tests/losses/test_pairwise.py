"""`pairwise_circle_loss` and `CircleLoss` against the float64 reference."""

import math

import keras
import numpy as np
import pytest

import keras_circle
from keras_circle.losses import pairwise_circle_loss
from keras_circle.testing import reference
from keras_circle.testing.backend import jit
from keras_circle.testing.backend import value_and_grad
from tests.conftest import NEEDS_XLA

pytestmark = pytest.mark.backend_agnostic

PAPER_SETTINGS = [(80.0, 0.4), (128.0, 0.25), (256.0, 0.25)]


def make_batch(rng, batch=16, dim=8, classes=4):
    """Labels with repeated classes plus one singleton (an anchor without positive)."""
    labels = rng.integers(0, classes, size=batch)
    labels[-1] = 1000  # singleton: no positive
    embeddings = rng.normal(size=(batch, dim)).astype("float32")
    return labels, embeddings


def rel_diff(actual, expected):
    scale = max(np.max(np.abs(expected)), 1e-12)
    return float(np.max(np.abs(np.asarray(actual, np.float64) - expected)) / scale)


@pytest.mark.parametrize("gamma,margin", PAPER_SETTINGS)
def test_correctness(rng, gamma, margin):
    labels, embeddings = make_batch(rng)
    ref_losses, ref_valid, ref_grad = reference.pairwise_circle(
        labels, embeddings, gamma, margin
    )
    per_sample = keras.ops.convert_to_numpy(
        pairwise_circle_loss(labels, embeddings, gamma=gamma, margin=margin)
    )
    assert rel_diff(per_sample, ref_losses) < 1e-5
    assert np.all(per_sample[~ref_valid] == 0)

    loss = keras_circle.CircleLoss(gamma=gamma, margin=margin)
    value, (grad,) = value_and_grad(lambda e: loss(labels, e), embeddings)
    assert value == pytest.approx(ref_losses[ref_valid].mean(), rel=1e-5)
    assert rel_diff(grad, ref_grad) < 1e-4


def test_full_gradient_matches_finite_differences(rng):
    """`stop_alpha_gradient=False` differentiates alpha too: central differences."""
    labels, embeddings = make_batch(rng, batch=8, dim=4, classes=3)
    gamma, margin = 32.0, 0.25

    def mean_loss(e):
        losses, valid, _ = reference.pairwise_circle(labels, e, gamma, margin)
        return losses[valid].mean()

    numeric = reference.numeric_gradient(mean_loss, embeddings)
    loss = keras_circle.CircleLoss(gamma, margin, stop_alpha_gradient=False)
    _, (grad,) = value_and_grad(lambda e: loss(labels, e), embeddings)
    assert rel_diff(grad, numeric) < 1e-3
    # The paper's gradient is a different vector (Eq. 9/10 hold only with
    # alpha constant).
    _, _, paper = reference.pairwise_circle(labels, embeddings, gamma, margin)
    assert rel_diff(paper, numeric) > 1e-2


def test_matches_keras_circle_forward(rng):
    """Per-anchor values equal `keras.losses.Circle` where both are defined."""
    labels, embeddings = make_batch(rng)
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    ours = keras.ops.convert_to_numpy(pairwise_circle_loss(labels, unit))
    theirs = keras.ops.convert_to_numpy(
        keras.losses.Circle(reduction=None)(labels, unit)
    )
    _, valid, _ = reference.pairwise_circle(labels, unit, 80.0, 0.4)
    np.testing.assert_allclose(ours[valid], theirs[valid], rtol=1e-5)


def test_perfectly_separated_batch():
    """Orthogonal classes, identical samples inside a class: s_p = 1, s_n = 0.

    Then alpha_p = alpha_n = m and every logit is -gamma * m**2, so with K
    samples per class and L negatives per anchor
    L = softplus(-2 * gamma * m**2 + log((K - 1) * L)).
    """
    k, classes, gamma, margin = 3, 4, 80.0, 0.4
    labels = np.repeat(np.arange(classes), k)
    embeddings = np.eye(classes, 8, dtype="float32")[labels] * 3.0
    expected = math.log1p(
        math.exp(-2 * gamma * margin**2) * (k - 1) * (classes - 1) * k
    )
    value = keras_circle.CircleLoss(gamma, margin)(labels, embeddings)
    assert float(value) == pytest.approx(expected, rel=1e-5)


def test_all_mismatched_batch():
    """Every sample its own class: no anchor has a positive, loss and gradient 0."""
    labels = np.arange(6)
    embeddings = np.random.default_rng(1).normal(size=(6, 4)).astype("float32")
    value, (grad,) = value_and_grad(
        lambda e: keras_circle.CircleLoss()(labels, e), embeddings
    )
    assert value == 0.0
    assert np.all(grad == 0.0)


@pytest.mark.parametrize(
    "labels",
    [np.zeros(5, dtype="int32"), np.array([7]), np.arange(4)],
    ids=["one_class", "single_sample", "all_singletons"],
)
def test_no_valid_anchor(labels):
    embeddings = (
        np.random.default_rng(2).normal(size=(len(labels), 4)).astype("float32")
    )
    value, (grad,) = value_and_grad(
        lambda e: keras_circle.CircleLoss(gamma=256.0)(labels, e), embeddings
    )
    assert value == 0.0 and np.all(np.isfinite(grad)) and np.all(grad == 0.0)


@pytest.mark.parametrize("gamma", [256.0, 512.0, 1024.0])
def test_large_gamma_stays_finite(rng, gamma):
    labels, embeddings = make_batch(rng, batch=32)
    ref_losses, ref_valid, ref_grad = reference.pairwise_circle(
        labels, embeddings, gamma, 0.25
    )
    value, (grad,) = value_and_grad(
        lambda e: keras_circle.CircleLoss(gamma, 0.25)(labels, e), embeddings
    )
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    assert value == pytest.approx(ref_losses[ref_valid].mean(), rel=1e-5)
    assert rel_diff(grad, ref_grad) < 1e-4


def test_no_reduction(rng):
    labels, embeddings = make_batch(rng)
    per_sample = keras_circle.CircleLoss(reduction=None)(labels, embeddings)
    expected = pairwise_circle_loss(labels, embeddings)
    np.testing.assert_allclose(per_sample, expected, rtol=1e-6)


def test_sample_weight(rng):
    labels, embeddings = make_batch(rng)
    weights = rng.uniform(size=len(labels)).astype("float32")
    per_sample, valid, _ = reference.pairwise_circle(labels, embeddings, 80.0, 0.4)
    value = keras_circle.CircleLoss()(labels, embeddings, sample_weight=weights)
    expected = (per_sample * weights)[valid].sum() / valid.sum()
    assert float(value) == pytest.approx(expected, rel=1e-5)
    summed = keras_circle.CircleLoss(reduction="sum")(labels, embeddings)
    assert float(summed) == pytest.approx(per_sample.sum(), rel=1e-5)


@pytest.mark.parametrize(
    "dtype", ["int8", "uint8", "int16", "int32", "int64", "uint32"]
)
def test_integer_dtypes(rng, dtype):
    labels = np.array([0, 0, 1, 1, 2, 2, 1, 0], dtype=dtype)
    embeddings = rng.normal(size=(8, 4)).astype("float32")
    expected = keras_circle.CircleLoss()(labels.astype("int64"), embeddings)
    value = keras_circle.CircleLoss()(labels, embeddings)
    assert float(value) == pytest.approx(float(expected), rel=1e-6)
    column = keras_circle.CircleLoss()(labels.reshape(-1, 1), embeddings)
    assert float(column) == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize("base", [2**24, 2**31 - 4])
def test_large_label_values_stay_distinct(rng, base):
    """Labels that collide in float32 (and in Keras' Circle) stay two classes."""
    labels = np.array([base, base, base + 1, base + 1, base + 2, base + 2], "int64")
    embeddings = rng.normal(size=(6, 4)).astype("float32")
    small = np.array([0, 0, 1, 1, 2, 2])
    expected = float(keras_circle.CircleLoss()(small, embeddings))
    assert expected > 0
    for dtype in ("int32", "int64"):
        value = keras_circle.CircleLoss()(labels.astype(dtype), embeddings)
        assert float(value) == pytest.approx(expected, rel=1e-6)


def test_float_labels():
    embeddings = np.random.default_rng(3).normal(size=(4, 3)).astype("float32")
    whole = keras_circle.CircleLoss()(np.array([0.0, 0.0, 1.0, 1.0]), embeddings)
    ints = keras_circle.CircleLoss()(np.array([0, 0, 1, 1]), embeddings)
    assert float(whole) == pytest.approx(float(ints))
    with pytest.raises(ValueError, match="y_true.*fractional"):
        keras_circle.CircleLoss()(np.array([0.0, 0.5, 1.0, 1.0]), embeddings)


@NEEDS_XLA
def test_xla_matches_eager(rng):
    labels, embeddings = make_batch(rng, batch=24)
    for loss in (keras_circle.CircleLoss(), keras_circle.CircleLoss(256.0, 0.25)):
        eager = float(loss(labels, embeddings))
        compiled = float(jit(lambda y, e, loss=loss: loss(y, e))(labels, embeddings))
        assert compiled == pytest.approx(eager, rel=1e-5, abs=1e-6)


def test_dtype_float16_argument(rng):
    """B=256, gamma=256 with dtype="float16": computed in float32, finite."""
    labels = rng.integers(0, 32, size=256)
    embeddings = rng.normal(size=(256, 16)).astype("float16")
    loss = keras_circle.CircleLoss(gamma=256.0, margin=0.25, dtype="float16")
    value = loss(labels, embeddings)
    assert np.isfinite(float(value))
    ref, valid, _ = reference.pairwise_circle(
        labels, embeddings.astype("float64"), 256.0, 0.25
    )
    assert float(value) == pytest.approx(ref[valid].mean(), rel=1e-4)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"gamma": 0.0}, "gamma"),
        ({"gamma": -1.0}, "gamma"),
        ({"gamma": float("nan")}, "gamma"),
        ({"margin": 1.0}, "margin"),
        ({"margin": -0.1}, "margin"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        keras_circle.CircleLoss(**kwargs)
    with pytest.raises(ValueError, match=match):
        pairwise_circle_loss(np.zeros(2, "int32"), np.ones((2, 2), "float32"), **kwargs)


def test_bad_inputs():
    loss = keras_circle.CircleLoss()
    e = np.ones((4, 3), "float32")
    with pytest.raises(ValueError, match="same batch size.*3 labels for 4"):
        loss(np.array([0, 1, 1]), e)
    with pytest.raises(ValueError, match="y_pred.*shape"):
        loss(np.array([0, 1, 1, 0]), np.ones((4, 3, 1), "float32"))
    with pytest.raises(ValueError, match="y_true.*shape"):
        loss(np.zeros((4, 2), "int32"), e)
    with pytest.raises(ValueError, match="y_pred.*NaN"):
        loss(np.array([0, 1, 1, 0]), np.full((4, 3), np.nan, "float32"))


def test_config():
    loss = keras_circle.CircleLoss(gamma=64.0, margin=0.3, stop_alpha_gradient=False)
    clone = keras_circle.CircleLoss.from_config(loss.get_config())
    assert (clone.gamma, clone.margin, clone.stop_alpha_gradient) == (64.0, 0.3, False)
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, keras_circle.CircleLoss) and restored.gamma == 64.0
