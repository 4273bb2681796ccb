"""Tests of keras_circle.fusion: `sums` against a float64 loop on every
backend, and how it is computed under TensorFlow."""

import keras
import numpy as np
import pytest

from keras_circle import fusion

pytestmark = pytest.mark.backend_agnostic


def _reference_sums(x, axis):
    x = np.asarray(x, dtype=np.float64)
    if axis == 0:
        return np.array(
            [sum(x[i, j] for i in range(x.shape[0])) for j in range(x.shape[1])]
        )
    return np.array(
        [sum(x[i, j] for j in range(x.shape[1])) for i in range(x.shape[0])]
    )


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("keepdims", [False, True])
def test_sums_match_a_float64_loop(axis, keepdims):
    x = np.random.default_rng(0).normal(size=(37, 53)).astype("float32")
    got = keras.ops.convert_to_numpy(
        fusion.sums(keras.ops.convert_to_tensor(x), axis, keepdims)
    )
    expected = _reference_sums(x, axis % 2)
    if keepdims:
        expected = np.expand_dims(expected, axis % 2)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_sums_propagate_nan_and_inf():
    x = np.ones((3, 4), "float32")
    x[0, 1] = np.nan
    x[1, 2] = np.inf
    rows = keras.ops.convert_to_numpy(fusion.sums(keras.ops.convert_to_tensor(x), 1))
    columns = keras.ops.convert_to_numpy(fusion.sums(keras.ops.convert_to_tensor(x), 0))
    assert np.isnan(rows[0]) and rows[1] == np.inf and rows[2] == 4
    assert np.isnan(columns[1]) and columns[2] == np.inf and columns[0] == 3


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="TensorFlow's graph"
)
@pytest.mark.parametrize("jit_compile", [False, True])
def test_sums_under_tensorflow_are_products_with_ones_for_any_batch(jit_compile):
    import tensorflow as tf

    @tf.function(jit_compile=jit_compile)
    def both(x):
        return fusion.sums(tf.square(x), 1, keepdims=True), fusion.sums(x * 2.0, 0)

    spec = tf.TensorSpec((None, 8), tf.float32)  # rows known only at run time
    graph = both.get_concrete_function(spec).graph
    assert any(op.type == "MatMul" for op in graph.get_operations())
    assert not any(op.type == "Sum" for op in graph.get_operations())
    x = np.random.default_rng(1).normal(size=(5, 8)).astype("float32")
    rows, columns = both(tf.constant(x))
    np.testing.assert_allclose(rows.numpy()[:, 0], _reference_sums(x**2, 1), rtol=1e-5)
    np.testing.assert_allclose(columns.numpy(), _reference_sums(2 * x, 0), rtol=1e-5)


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="TensorFlow's graph"
)
def test_sums_on_a_gpu_stay_reductions(monkeypatch):
    # TensorFloat-32 matmuls would round the sums.
    import tensorflow as tf

    from keras_circle import kernels

    monkeypatch.setattr(kernels, "on_accelerator", lambda x: True)

    @tf.function
    def rows(x):
        return fusion.sums(x, 1)

    graph = rows.get_concrete_function(tf.TensorSpec((4, 8), tf.float32)).graph
    assert any(op.type == "Sum" for op in graph.get_operations())
    assert not any(op.type == "MatMul" for op in graph.get_operations())
