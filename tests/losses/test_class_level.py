"""`class_circle_loss` and `ClassCircleLoss` against the float64 reference."""

import math

import keras
import numpy as np
import pytest

import keras_circle
from keras_circle.losses import class_circle_loss
from keras_circle.testing import reference
from keras_circle.testing.backend import jit
from keras_circle.testing.backend import value_and_grad
from tests.conftest import NEEDS_XLA
from tests.losses.test_pairwise import PAPER_SETTINGS
from tests.losses.test_pairwise import rel_diff

pytestmark = pytest.mark.backend_agnostic


def make_cosine(rng, batch=12, classes=7):
    labels = rng.integers(0, classes, size=batch)
    cosine = np.tanh(rng.normal(size=(batch, classes))).astype("float32")
    return labels, cosine


@pytest.mark.parametrize("gamma,margin", PAPER_SETTINGS)
def test_correctness(rng, gamma, margin):
    labels, cosine = make_cosine(rng)
    ref_losses, ref_grad = reference.class_circle(labels, cosine, gamma, margin)
    per_sample = class_circle_loss(labels, cosine, gamma=gamma, margin=margin)
    assert rel_diff(keras.ops.convert_to_numpy(per_sample), ref_losses) < 1e-5
    loss = keras_circle.ClassCircleLoss(gamma, margin)
    value, (grad,) = value_and_grad(lambda s: loss(labels, s), cosine)
    assert value == pytest.approx(ref_losses.mean(), rel=1e-5)
    assert rel_diff(grad, ref_grad) < 1e-4


def test_full_gradient_matches_finite_differences(rng):
    labels, cosine = make_cosine(rng, batch=5, classes=4)
    gamma, margin = 16.0, 0.25

    def mean_loss(s):
        return reference.class_circle(labels, s, gamma, margin)[0].mean()

    numeric = reference.numeric_gradient(mean_loss, cosine)
    loss = keras_circle.ClassCircleLoss(gamma, margin, stop_alpha_gradient=False)
    _, (grad,) = value_and_grad(lambda s: loss(labels, s), cosine)
    assert rel_diff(grad, numeric) < 1e-3


def test_perfect_separation():
    """s_p = 1 and s_n = 0 for C classes: every logit is -gamma * m**2 up to sign.

    target logit = gamma * m * (1 - (1 - m)) = gamma m^2, others
    gamma * m * (0 - m) = -gamma m^2, so L = log(1 + (C - 1) exp(-2 gamma m^2)).
    """
    classes, gamma, margin = 5, 256.0, 0.25
    labels = np.arange(classes)
    cosine = np.eye(classes, dtype="float32")
    expected = math.log1p((classes - 1) * math.exp(-2 * gamma * margin**2))
    value = keras_circle.ClassCircleLoss(gamma, margin)(labels, cosine)
    assert float(value) == pytest.approx(expected, rel=1e-4)


def test_single_class_and_single_sample():
    value, (grad,) = value_and_grad(
        lambda s: keras_circle.ClassCircleLoss()(np.array([0]), s),
        np.array([[0.3]], "float32"),
    )
    assert value == 0.0 and np.all(grad == 0.0)


@pytest.mark.parametrize("gamma", [512.0, 1024.0])
def test_large_gamma_stays_finite(rng, gamma):
    labels, cosine = make_cosine(rng)
    value, (grad,) = value_and_grad(
        lambda s: keras_circle.ClassCircleLoss(gamma)(labels, s), cosine
    )
    ref, _ = reference.class_circle(labels, cosine, gamma, 0.25)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    assert value == pytest.approx(ref.mean(), rel=1e-5)


def test_labels_out_of_range(rng):
    _, cosine = make_cosine(rng, batch=3, classes=4)
    with pytest.raises(ValueError, match=r"y_true.*\[0, 4\).*e.g. 4"):
        keras_circle.ClassCircleLoss()(np.array([0, 4, 1]), cosine)
    with pytest.raises(ValueError, match="y_true.*range"):
        keras_circle.ClassCircleLoss()(np.array([0, -1, 1]), cosine)


def test_bad_inputs(rng):
    _, cosine = make_cosine(rng, batch=3, classes=4)
    with pytest.raises(ValueError, match="same batch size"):
        keras_circle.ClassCircleLoss()(np.array([0, 1]), cosine)
    with pytest.raises(ValueError, match="num_classes"):
        keras_circle.ClassCircleLoss()(np.array([0, 1, 2]), cosine[:, :, None])
    with pytest.raises(ValueError, match="fractional"):
        keras_circle.ClassCircleLoss()(np.array([0.0, 1.5, 2.0]), cosine)
    with pytest.raises(ValueError, match="margin"):
        keras_circle.ClassCircleLoss(margin=1.5)


@NEEDS_XLA
def test_xla_matches_eager(rng):
    labels, cosine = make_cosine(rng)
    loss = keras_circle.ClassCircleLoss()
    eager = float(loss(labels, cosine))
    compiled = float(jit(lambda y, s: loss(y, s))(labels, cosine))
    assert compiled == pytest.approx(eager, rel=1e-5)


def test_config():
    loss = keras_circle.ClassCircleLoss(gamma=128.0, margin=0.2)
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, keras_circle.ClassCircleLoss)
    assert (clone.gamma, clone.margin, clone.stop_alpha_gradient) == (128.0, 0.2, True)


def test_presets():
    face = keras_circle.circle_loss_for("face_recognition")
    reid = keras_circle.circle_loss_for("person_reid")
    retrieval = keras_circle.circle_loss_for("fine_grained_retrieval")
    assert isinstance(face, keras_circle.ClassCircleLoss) and (
        face.gamma,
        face.margin,
    ) == (256.0, 0.25)
    assert isinstance(reid, keras_circle.ClassCircleLoss) and (
        reid.gamma,
        reid.margin,
    ) == (128.0, 0.25)
    assert isinstance(retrieval, keras_circle.CircleLoss)
    assert (retrieval.gamma, retrieval.margin) == (80.0, 0.4)
    with pytest.raises(ValueError, match="task"):
        keras_circle.circle_loss_for("speech")
