"""The losses inside `compile`/`fit`: mixed precision and `.keras` round trips."""

import keras
import numpy as np
import pytest

import keras_circle
from tests.conftest import NEEDS_XLA

pytestmark = pytest.mark.backend_agnostic


def embedder(dim=8):
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(dim),
        ]
    )


def data(rng, n=64, classes=4):
    labels = rng.integers(0, classes, size=n)
    x = (rng.normal(size=(n, 6)) + labels[:, None]).astype("float32")
    return x, labels


def pair_model(loss=None):
    model = embedder()
    model.compile(optimizer="adam", loss=loss or keras_circle.CircleLoss())
    return model


def class_model(loss=None):
    inputs = keras.Input((6,))
    cosine = keras_circle.CosineProxies(4)(embedder()(inputs))
    model = keras.Model(inputs, cosine)
    model.compile(optimizer="sgd", loss=loss or keras_circle.ClassCircleLoss())
    return model


@pytest.mark.parametrize("policy", ["float32", "mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("build", [pair_model, class_model], ids=["pair", "class"])
def test_fit_stays_finite(rng, policy, build):
    keras.config.set_dtype_policy(policy)
    x, y = data(rng)
    history = build().fit(x, y, batch_size=16, epochs=2, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] > 0


@NEEDS_XLA
def test_fit_with_jit_compile(rng):
    x, y = data(rng)
    model = embedder()
    model.compile(optimizer="adam", loss=keras_circle.CircleLoss(), jit_compile=True)
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize(
    "build,loss",
    [
        (pair_model, None),
        (class_model, keras_circle.ClassCircleLoss(gamma=128.0)),
        (class_model, keras_circle.AMSoftmaxLoss()),
        (class_model, keras_circle.ArcFaceLoss()),
        (pair_model, keras_circle.UnifiedPairLoss(gamma=32.0)),
        (pair_model, keras_circle.TripletLoss(mining="batch_hard")),
    ],
    ids=["circle", "class_circle", "am_softmax", "arcface", "unified", "triplet"],
)
def test_saved_model_file_round_trip(rng, tmp_path, build, loss):
    """Saved `.keras` files load without `custom_objects`, compiled loss included."""
    x, y = data(rng)
    model = build() if loss is None else build(loss)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(
        restored.predict(x, verbose=0),
        model.predict(x, verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )
    assert type(restored.loss) is type(model.loss)
    assert restored.loss.get_config() == model.loss.get_config()
    restored.fit(x, y, batch_size=16, epochs=1, verbose=0)
