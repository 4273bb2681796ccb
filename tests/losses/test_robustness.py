"""Nothing silent: bad values give a clear error or NaN, never a normal loss.

Eagerly (and in a plain TensorFlow graph) a value check raises. Under XLA and
`jax.jit` no check can raise, so a failed one makes the loss and its gradients
NaN, where `keras.callbacks.TerminateOnNaN` sees it. Huge and tiny embeddings
normalise like any other.
"""

import keras
import numpy as np
import pytest

import keras_circle
from keras_circle.losses import am_softmax_loss
from keras_circle.losses import class_circle_loss
from keras_circle.losses import triplet_loss
from keras_circle.losses import unified_pair_loss
from keras_circle.testing import reference
from keras_circle.testing.backend import value_and_grad
from tests.conftest import NEEDS_XLA
from tests.losses.memory_loss import MemoryThenLoss

pytestmark = pytest.mark.backend_agnostic

TF_ONLY = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="TensorFlow graphs"
)


# Losses on embeddings `(batch, dim)`.
PAIR_LOSSES = {
    "circle": lambda: keras_circle.CircleLoss(),
    "circle_256": lambda: keras_circle.CircleLoss(256.0, 0.25),
    "unified": lambda: keras_circle.UnifiedPairLoss(),
    "triplet": lambda: keras_circle.TripletLoss(),
    "triplet_hard_normalised": lambda: keras_circle.TripletLoss(
        mining="batch_hard", l2_normalize=True
    ),
    "triplet_angular": lambda: keras_circle.TripletLoss(distance="angular"),
    "xbm": lambda: MemoryThenLoss(4, gamma=32.0, margin=0.25),
}
# Losses that normalise the embeddings: invariant to their scale.
NORMALISING = [k for k in PAIR_LOSSES if k != "triplet"]
# Losses on cosines `(batch, num_classes)`.
CLASS_LOSSES = {
    "class_circle": lambda: keras_circle.ClassCircleLoss(),
    "am_softmax": lambda: keras_circle.AMSoftmaxLoss(),
    "arcface": lambda: keras_circle.ArcFaceLoss(),
}

LABELS = np.array([0, 0, 1, 1, 2, 2, 3, 3])


def _embeddings(seed=0):
    return np.random.default_rng(seed).normal(size=(8, 4)).astype("float32")


def _cosine(seed=0):
    rng = np.random.default_rng(seed)
    return np.tanh(rng.normal(size=(8, 5))).astype("float32")


_COMPILED = {}


def _make(name):
    if name in PAIR_LOSSES:
        return PAIR_LOSSES[name](), _embeddings()
    return CLASS_LOSSES[name](), _cosine()


def _compiled(name):
    """`(labels, x) -> (value, grad)` under XLA (TensorFlow) or `jax.jit`.

    One per loss, shared by the tests below: every call passes float32
    labels and inputs of one shape, so each loss compiles once.
    """
    if name in _COMPILED:
        return _COMPILED[name]
    loss, _ = _make(name)
    if keras.backend.backend() == "jax":
        import jax

        def scalar(x, labels):
            return loss(labels, x)

        step = jax.jit(jax.value_and_grad(scalar))

        def fn(labels, x):
            value, grad = step(x, labels)
            return float(value), np.asarray(grad)

    else:
        import tensorflow as tf

        @tf.function(jit_compile=True)
        def step(labels, x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                value = loss(labels, x)
            return value, tape.gradient(value, x)

        def fn(labels, x):
            value, grad = step(tf.constant(labels), tf.constant(x))
            return float(value), grad.numpy()

    _COMPILED[name] = fn
    return fn


def _labels(name):
    x = _make(name)[1]
    return (LABELS % x.shape[1]).astype("float32")


def _assert_nan(value, grad):
    assert np.isnan(value)
    assert np.all(np.isnan(grad)), "the gradient must be NaN, not finite-looking"


@NEEDS_XLA
@pytest.mark.parametrize("name", [*PAIR_LOSSES, *CLASS_LOSSES])
def test_non_finite_input_gives_nan_loss_and_gradient_when_compiled(name):
    loss, x = _make(name)
    labels = _labels(name)
    value, grad = _compiled(name)(labels, x)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    assert value == pytest.approx(float(loss(labels, x)), rel=1e-5, abs=1e-6)
    for bad in (np.nan, np.inf, -np.inf):
        x_bad = x.copy()
        x_bad[1, 2] = bad
        _assert_nan(*_compiled(name)(labels, x_bad))


@NEEDS_XLA
@pytest.mark.parametrize("name", PAIR_LOSSES)
def test_nan_wins_over_the_zero_loss_rule_when_compiled(name):
    """All-distinct labels: no valid anchor (0 by the rule), but a NaN input."""
    x = _make(name)[1]
    distinct = np.arange(8, dtype="float32")
    value, grad = _compiled(name)(distinct, x)
    assert value == 0 and np.all(grad == 0)
    x[0, 0] = np.nan
    _assert_nan(*_compiled(name)(distinct, x))


@NEEDS_XLA
@pytest.mark.parametrize("name", [*PAIR_LOSSES, *CLASS_LOSSES])
def test_fractional_labels_give_nan_when_compiled(name):
    labels = _labels(name)
    labels[3] += 0.5
    _assert_nan(*_compiled(name)(labels, _make(name)[1]))


@NEEDS_XLA
@pytest.mark.parametrize("name", CLASS_LOSSES)
def test_labels_out_of_range_give_nan_when_compiled(name):
    for shift in (2.0, -3.0):
        _assert_nan(*_compiled(name)(_labels(name) + shift, _cosine()))


@pytest.mark.parametrize("name", [*PAIR_LOSSES, *CLASS_LOSSES])
def test_non_finite_input_raises_eagerly(name):
    loss, x = _make(name)
    x[1, 2] = np.nan
    with pytest.raises(ValueError, match="y_pred.*NaN"):
        loss(LABELS % x.shape[1], x)


@TF_ONLY
@pytest.mark.parametrize("name", ["circle", "class_circle"])
def test_non_finite_input_raises_in_a_plain_graph(name):
    import tensorflow as tf

    loss, x = _make(name)
    x[1, 2] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="y_pred.*NaN"):
        tf.function(lambda y, x: loss(y, x))(LABELS % x.shape[1], x)


@TF_ONLY
def test_fractional_labels_raise_in_a_plain_graph_before_other_checks():
    """The poisoned predictions wait for the labels' assertion: its message."""
    import tensorflow as tf

    labels = LABELS.astype("float32")
    labels[3] += 0.5
    loss = keras_circle.CircleLoss()
    with pytest.raises(tf.errors.InvalidArgumentError, match="y_true.*fractional"):
        tf.function(lambda y, x: loss(y, x))(labels, _embeddings())


@pytest.mark.parametrize("name", NORMALISING)
@pytest.mark.parametrize("scale", [1e30, 1e-30, 1e-20, 1e19])
def test_huge_and_tiny_norms_give_the_same_loss(name, scale):
    x = _embeddings()
    expected = float(PAIR_LOSSES[name]()(LABELS, x))
    value = float(PAIR_LOSSES[name]()(LABELS, (x * scale).astype("float32")))
    assert value == pytest.approx(expected, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("name", CLASS_LOSSES)
@pytest.mark.parametrize("scale", [1e30, 1e-30])
def test_huge_and_tiny_norms_give_the_same_class_loss(name, scale):
    layer = keras_circle.CosineProxies(5)
    x = _embeddings()
    expected = float(CLASS_LOSSES[name]()(LABELS % 5, layer(x)))
    value = float(CLASS_LOSSES[name]()(LABELS % 5, layer(x * np.float32(scale))))
    assert value == pytest.approx(expected, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("distance", ["l2", "squared_l2"])
@pytest.mark.parametrize("scale", [1e20, 1e30, 1e-30])
def test_triplet_without_normalisation_is_never_nan_at_extreme_scales(distance, scale):
    x = _embeddings(1) * np.float32(scale)
    for mining in ("semi_hard", "batch_hard"):
        losses = keras.ops.convert_to_numpy(
            triplet_loss(LABELS, x, mining=mining, distance=distance)
        )
        assert not np.any(np.isnan(losses))
        expected = reference.triplet(LABELS, x, 1.0, mining, distance)
        if not np.all(expected < 3e38):
            # Squared distances beyond float32: inf, the gradient undefined.
            assert np.all(losses[expected >= 3e38] == np.inf)
            continue
        np.testing.assert_allclose(losses, expected, rtol=1e-4, atol=1e-6)
        value, (grad,) = value_and_grad(
            lambda e, m=mining: keras.ops.sum(
                triplet_loss(LABELS, e, mining=m, distance=distance)
            ),
            x,
        )
        assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("name", PAIR_LOSSES)
def test_empty_batch_is_rejected(name):
    # XBM: the memory layer sees the batch first and names its own arguments.
    names = "inputs.*labels" if name == "xbm" else "y_pred.*y_true"
    with pytest.raises(ValueError, match=f"{names}.*empty batch"):
        PAIR_LOSSES[name]()(np.zeros((0,), "int32"), np.zeros((0, 4), "float32"))


def test_functional_empty_batch_names_the_arguments():
    with pytest.raises(ValueError, match="embeddings.*labels.*empty batch"):
        unified_pair_loss(np.zeros((0,), "int32"), np.zeros((0, 4), "float32"))


@pytest.mark.parametrize("weights", [np.ones(3), np.ones((8, 2)), np.ones((1, 8))])
def test_sample_weight_of_the_wrong_shape_is_rejected(weights):
    for loss in (keras_circle.CircleLoss(), keras_circle.ClassCircleLoss()):
        x = _embeddings() if isinstance(loss, keras_circle.CircleLoss) else _cosine()
        with pytest.raises(ValueError, match="sample_weight.*batch_size=8.*received"):
            loss(LABELS, x, sample_weight=weights)


def test_sample_weight_of_the_right_shapes_is_accepted():
    loss, x = keras_circle.CircleLoss(), _embeddings()
    plain = float(loss(LABELS, x))
    for weights in (np.ones(8), np.ones((8, 1)), 1.0):
        assert float(loss(LABELS, x, sample_weight=weights)) == pytest.approx(plain)


def test_string_labels_are_rejected():
    for labels in (np.array(list("aabbccdd")), list("aabbccdd")):
        with pytest.raises(TypeError, match="y_true.*strings.*StringLookup"):
            keras_circle.CircleLoss()(labels, _embeddings())


def test_functional_margins_are_checked():
    with pytest.raises(ValueError, match="margin"):
        am_softmax_loss(LABELS, _cosine(), margin=float("nan"))
    with pytest.raises(ValueError, match="margin"):
        unified_pair_loss(LABELS, _embeddings(), margin=float("nan"))
    with pytest.raises(ValueError, match="margin"):
        unified_pair_loss(LABELS, _embeddings(), margin=-0.1)


@pytest.mark.parametrize("margin", [float("nan"), float("inf"), -1.0, True, "1"])
def test_triplet_rejects_a_margin_that_is_not_a_finite_number(margin):
    with pytest.raises(ValueError, match="margin"):
        keras_circle.TripletLoss(margin=margin)
    with pytest.raises(ValueError, match="margin"):
        triplet_loss(LABELS, _embeddings(), margin=margin)


def test_triplet_accepts_numpy_margins():
    assert keras_circle.TripletLoss(margin=np.float32(0.5)).margin == 0.5


def _raw_embeddings():
    """What a class-level loss gets when the `CosineProxies` head is missing."""
    return (5.0 * np.random.default_rng(1).normal(size=(8, 5))).astype("float32")


@pytest.mark.parametrize("name", CLASS_LOSSES)
def test_values_outside_cosine_range_raise_eagerly(name):
    """Before: ClassCircleLoss trained on raw embeddings at a loss near 900."""
    with pytest.raises(ValueError, match=r"`y_pred` holds values outside \[-1, 1\]"):
        CLASS_LOSSES[name]()(LABELS % 5, _raw_embeddings())


def test_values_outside_cosine_range_name_what_they_got_and_the_fix():
    with pytest.raises(ValueError) as error:
        keras_circle.ClassCircleLoss()(LABELS % 5, _raw_embeddings())
    message = str(error.value)
    largest = float(np.abs(_raw_embeddings()).max())
    assert f"largest magnitude {largest:.4g}" in message
    assert "CosineProxies" in message


def test_functional_form_names_its_cosine_argument():
    with pytest.raises(ValueError, match="`cosine` holds values outside"):
        class_circle_loss(LABELS % 5, _raw_embeddings())


@pytest.mark.parametrize("name", CLASS_LOSSES)
def test_rounding_above_one_is_accepted(name):
    cosine = _cosine()
    cosine[0, 0], cosine[1, 2] = 1.0 + 1e-4, -1.0 - 1e-4
    assert np.isfinite(float(CLASS_LOSSES[name]()(LABELS % 5, cosine)))


@NEEDS_XLA
@pytest.mark.parametrize("name", CLASS_LOSSES)
def test_values_outside_cosine_range_give_nan_when_compiled(name):
    _assert_nan(*_compiled(name)(_labels(name), _raw_embeddings()))


@TF_ONLY
def test_values_outside_cosine_range_raise_in_a_plain_graph():
    import tensorflow as tf

    loss = keras_circle.ClassCircleLoss()
    step = tf.function(lambda y, s: loss(y, s))
    with pytest.raises(tf.errors.InvalidArgumentError, match="outside"):
        step(tf.constant(LABELS % 5), tf.constant(_raw_embeddings()))


def test_sampled_layout_skips_minus_inf_but_checks_the_rest():
    layer = keras_circle.CosineProxies(6, sample_fraction=0.5, seed=0)
    labels = np.array([0, 1, 2, 3])
    cosine = keras.ops.convert_to_numpy(
        layer(_embeddings()[:4], labels=labels, training=True)
    )
    loss = keras_circle.ClassCircleLoss(sampled=True)
    assert np.isfinite(float(loss(labels, cosine)))
    cosine[0, 0] = 3.0
    with pytest.raises(ValueError, match="outside"):
        loss(labels, cosine)


@TF_ONLY
def test_plain_graph_tells_out_of_range_cosines_from_non_finite_ones():
    """One flag in the kernel's row-maximum pass serves both checks; the
    message is worked out after it fails, and names the fault there is."""
    import tensorflow as tf

    loss = keras_circle.ClassCircleLoss()
    step = tf.function(lambda y, s: loss(y, s))
    labels = tf.constant(LABELS % 5)
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        step(labels, tf.constant(_raw_embeddings()))
    assert "outside [-1, 1]" in str(error.value) and "NaN" not in str(error.value)
    cosine = _cosine()
    cosine[2, 1] = np.inf
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        step(labels, tf.constant(cosine))
    assert "y_pred` contains NaN or infinite" in str(error.value)
    assert "outside" not in str(error.value)
    assert np.isfinite(float(step(labels, tf.constant(_cosine()))))
