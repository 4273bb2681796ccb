"""`CosineProxies`: cosines in float32, shape checks, serialisation."""

import keras
import numpy as np
import pytest

import keras_circle
from tests.conftest import NEEDS_XLA

pytestmark = pytest.mark.backend_agnostic


def test_correctness(rng):
    layer = keras_circle.CosineProxies(5)
    x = rng.normal(size=(4, 6)).astype("float32")
    out = keras.ops.convert_to_numpy(layer(x))
    w = keras.ops.convert_to_numpy(layer.proxies)
    expected = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (
        w / np.linalg.norm(w, axis=1, keepdims=True)
    ).T
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert out.shape == (4, 5) and np.all(np.abs(out) <= 1 + 1e-6)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_dtype(policy, rng):
    keras.config.set_dtype_policy(policy)
    layer = keras_circle.CosineProxies(3)
    x = rng.normal(size=(2, 4)).astype("float16")
    out = layer(x)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert keras.backend.standardize_dtype(layer.proxies.dtype) == "float32"


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        keras_circle.CosineProxies(0)
    with pytest.raises(TypeError, match="num_classes"):
        keras_circle.CosineProxies(3.0)
    layer = keras_circle.CosineProxies(3)
    with pytest.raises(ValueError):
        layer(np.ones((2, 4, 1), "float32"))
    layer(np.ones((2, 4), "float32"))
    with pytest.raises(ValueError):
        layer(np.ones((2, 5), "float32"))


def test_config():
    layer = keras_circle.CosineProxies(7, kernel_initializer="he_normal", name="head")
    clone = keras_circle.CosineProxies.from_config(layer.get_config())
    assert clone.num_classes == 7 and clone.name == "head"
    assert isinstance(clone.kernel_initializer, keras.initializers.HeNormal)


def test_numpy_integer_num_classes_is_accepted():
    layer = keras_circle.CosineProxies(np.int64(5))
    assert layer.num_classes == 5 and type(layer.num_classes) is int
    assert keras_circle.CosineProxies.from_config(layer.get_config()).num_classes == 5
    for bad in (True, np.float64(5.0)):
        with pytest.raises(TypeError, match="num_classes"):
            keras_circle.CosineProxies(bad)


@pytest.mark.parametrize("scale", [1e30, 1e-30])
def test_huge_and_tiny_embeddings_give_the_same_cosines(rng, scale):
    """Norms above about 1.9e19 overflowed when squared and read as zero."""
    layer = keras_circle.CosineProxies(5)
    x = rng.normal(size=(4, 6)).astype("float32")
    expected = keras.ops.convert_to_numpy(layer(x))
    actual = keras.ops.convert_to_numpy(layer(x * np.float32(scale)))
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6)


@NEEDS_XLA
def test_non_finite_embedding_gives_nan_cosines_when_compiled(rng):
    from keras_circle.testing.backend import jit

    layer = keras_circle.CosineProxies(5)
    x = rng.normal(size=(4, 6)).astype("float32")
    layer.build(x.shape)
    x[1, 2], x[3, 0] = np.nan, np.inf
    out = keras.ops.convert_to_numpy(jit(lambda x: layer(x))(x))
    assert np.all(np.isnan(out[[1, 3]])) and np.all(np.isfinite(out[[0, 2]]))
