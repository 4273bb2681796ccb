"""Partial FC: `CosineProxies(sample_fraction=...)` with `ClassCircleLoss(sampled=True)`."""

import keras
import numpy as np
import pytest

import keras_circle
from keras_circle.testing import backend
from tests.conftest import NEEDS_XLA

pytestmark = pytest.mark.backend_agnostic


def rel_diff(actual, expected):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(
        np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-12)
    )


def value_and_grad(fn, *args):
    """As `keras_circle.testing.backend.value_and_grad`; sparse proxy gradients made dense."""
    if keras.backend.backend() != "tensorflow":
        return backend.value_and_grad(fn, *args)
    import tensorflow as tf

    tensors = [tf.constant(a) for a in args]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        value = fn(*tensors)
    grads = tape.gradient(value, tensors)
    return value.numpy(), [tf.convert_to_tensor(g).numpy() for g in grads]


def layer_loss(layer, labels, sampled, training):
    """The loss as a pure function of (embeddings, proxies), on every backend."""
    loss = keras_circle.ClassCircleLoss(gamma=64.0, margin=0.25, sampled=sampled)
    state = [v.value for v in layer.non_trainable_variables]

    def fn(e, w):
        kwargs = {"labels": labels, "training": training} if sampled else {}
        cosine, _ = layer.stateless_call([w], state, e, **kwargs)
        return loss(labels, cosine)

    return fn


@pytest.mark.parametrize("fraction,training", [(1.0, True), (0.3, False)])
def test_full_share_equals_full_loss(rng, fraction, training):
    """Every class once per row (duplicated labels in the batch included)."""
    classes, batch = 40, 12
    labels = rng.integers(0, 8, size=batch)
    e = rng.normal(size=(batch, 16)).astype("float32")
    layer = keras_circle.CosineProxies(classes, sample_fraction=fraction, seed=3)
    layer.build((None, 16))
    w = keras.ops.convert_to_numpy(layer.proxies)
    full, full_grads = value_and_grad(layer_loss(layer, labels, False, None), e, w)
    value, grads = value_and_grad(layer_loss(layer, labels, True, training), e, w)
    assert rel_diff(value, full) < 1e-5
    for g, ref in zip(grads, full_grads, strict=True):
        assert rel_diff(g, ref) < 1e-5


def test_sampled_layout(rng):
    classes, batch, fraction = 100, 8, 0.25
    labels = np.array([3, 3, 5, 7, 7, 7, 9, 11])
    e = rng.normal(size=(batch, 4)).astype("float32")
    layer = keras_circle.CosineProxies(classes, sample_fraction=fraction, seed=1)
    cosine = keras.ops.convert_to_numpy(layer(e, labels=labels, training=True))
    assert cosine.shape == (batch, batch + 25)
    assert np.all(np.isfinite(np.diag(cosine)))
    # Drawn classes are never the batch's own: all finite.
    assert np.all(np.isfinite(cosine[:, batch:]))
    # Each row sees each batch class once: its own, plus one column per other.
    assert np.all(np.isfinite(cosine[:, :batch]).sum(axis=1) == 5)
    assert keras.ops.convert_to_numpy(layer(e)).shape == (batch, classes)


def test_config():
    layer = keras_circle.CosineProxies(7, sample_fraction=0.5, seed=2)
    clone = keras_circle.CosineProxies.from_config(layer.get_config())
    assert clone.sample_fraction == 0.5 and clone.seed == 2
    plain = keras_circle.CosineProxies.from_config(
        keras_circle.CosineProxies(7).get_config()
    )
    assert plain.sample_fraction is None
    loss = keras_circle.ClassCircleLoss(sampled=True)
    assert keras_circle.ClassCircleLoss.from_config(loss.get_config()).sampled
    with pytest.raises(ValueError, match="sample_fraction"):
        keras_circle.CosineProxies(7, sample_fraction=0.0)


def test_fit_with_a_tenth_of_5000_classes(rng):
    classes, dim, n = 5000, 16, 512
    labels = rng.integers(0, classes, size=n)
    centres = rng.normal(size=(classes, dim)).astype("float32")
    x = centres[labels] + 0.1 * rng.normal(size=(n, dim)).astype("float32")
    inputs, label_input = keras.Input((dim,)), keras.Input((), dtype="int32")
    embeddings = keras.layers.Dense(32)(inputs)
    cosine = keras_circle.CosineProxies(classes, sample_fraction=0.1, seed=0)(
        embeddings, labels=label_input
    )
    model = keras.Model([inputs, label_input], cosine)
    model.compile(
        keras.optimizers.SGD(0.5), loss=keras_circle.ClassCircleLoss(sampled=True)
    )
    history = model.fit([x, labels], labels, batch_size=64, epochs=4, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_labels_out_of_range_are_rejected(rng):
    layer = keras_circle.CosineProxies(5, sample_fraction=0.5, seed=0)
    e = rng.normal(size=(4, 3)).astype("float32")
    for labels in (np.array([0, 1, 7, 2]), np.array([0, -1, 2, 2])):
        with pytest.raises(ValueError, match=r"labels.*\[0, 5\).*num_classes"):
            layer(e, labels=labels, training=True)


@NEEDS_XLA
def test_labels_out_of_range_give_nan_cosines_when_compiled(rng):
    layer = keras_circle.CosineProxies(5, sample_fraction=0.5, seed=0)
    e = rng.normal(size=(4, 3)).astype("float32")
    layer.build(e.shape)
    state = [v.value for v in layer.non_trainable_variables]

    def cosine(e, labels):
        out, _ = layer.stateless_call(
            [layer.proxies.value], state, e, labels=labels, training=True
        )
        return out

    fn = backend.jit(cosine)
    good = keras.ops.convert_to_numpy(fn(e, np.array([0, 1, 4, 2])))
    assert not np.any(np.isnan(good))
    bad = keras.ops.convert_to_numpy(fn(e, np.array([0, 1, 7, 2])))
    assert np.all(np.isnan(bad))


def test_sampled_loss_rejects_labels_of_the_wrong_length(rng):
    layer = keras_circle.CosineProxies(10, sample_fraction=0.5, seed=0)
    labels = np.array([0, 0, 3, 4])
    cosine = layer(rng.normal(size=(4, 3)).astype("float32"), labels=labels)
    loss = keras_circle.ClassCircleLoss(sampled=True)
    with pytest.raises(ValueError, match="same batch size.*3 labels for 4"):
        loss(labels[:3], cosine)


def test_sampled_loss_rejects_full_cosines(rng):
    """Full (batch, num_classes) cosines are not the sampled layout."""
    layer = keras_circle.CosineProxies(10)
    e = rng.normal(size=(4, 3)).astype("float32")
    loss = keras_circle.ClassCircleLoss(sampled=True)
    # Fewer classes than samples: fewer columns than rows.
    with pytest.raises(ValueError, match="sampled layout.*fewer columns"):
        loss(np.array([0, 1, 2, 2]), keras_circle.CosineProxies(3)(e))
    # A class twice in the batch: the layout would hide one column from the other.
    with pytest.raises(ValueError, match="sampled layout.*-inf in each other"):
        loss(np.array([0, 1, 2, 2]), layer(e))


def test_sampled_loss_nan_cosine_is_not_a_skipped_column(rng):
    layer = keras_circle.CosineProxies(10, sample_fraction=0.5, seed=0)
    labels = np.array([0, 1, 3, 4])
    cosine = keras.ops.convert_to_numpy(
        layer(rng.normal(size=(4, 3)).astype("float32"), labels=labels)
    )
    cosine[0, 2] = np.nan
    with pytest.raises(ValueError, match="y_pred.*NaN"):
        keras_circle.ClassCircleLoss(sampled=True)(labels, cosine)
