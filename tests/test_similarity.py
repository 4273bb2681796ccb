"""Tests of keras_circle.similarity against NumPy float64 references.

The references below loop over rows and columns explicitly; they share no
code with the implementation. Values are compared at float32 tolerance.
"""

import keras
import numpy as np
import pytest

from keras_circle import similarity
from keras_circle.testing.backend import value_and_grad

pytestmark = pytest.mark.backend_agnostic


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _reference_normalize(x):
    out = np.zeros_like(x, dtype=np.float64)
    for i, row in enumerate(x.astype(np.float64)):
        norm = np.sqrt(sum(v * v for v in row))
        if norm > 0:
            out[i] = row / norm
    return out


def _reference_masks(labels, ref_labels, self_index, ref_valid):
    positive = np.zeros((len(labels), len(ref_labels)), bool)
    negative = np.zeros_like(positive)
    for i, label in enumerate(labels):
        for j, ref in enumerate(ref_labels):
            if ref_valid is not None and not ref_valid[j]:
                continue
            if label != ref:
                negative[i, j] = True
            elif self_index is None or self_index[i] != j:
                positive[i, j] = True
    return positive, negative


def _reference_logsumexp(logits, mask):
    out = np.full(len(logits), -np.inf)
    for i, (row, keep) in enumerate(zip(logits, mask, strict=True)):
        values = [float(v) for v, k in zip(row, keep, strict=True) if k]
        if values:
            top = max(values)
            out[i] = top + np.log(sum(np.exp(v - top) for v in values))
    return out


def test_l2_normalize_correctness(rng):
    x = rng.standard_normal((7, 5)).astype("float32")
    x[3] = 0.0
    got = _np(similarity.l2_normalize(x))
    np.testing.assert_allclose(got, _reference_normalize(x), atol=1e-6)
    assert got.dtype == np.float32


def test_l2_normalize_zero_row_has_finite_gradient():
    x = np.zeros((2, 4), "float32")
    x[0] = [3.0, 0.0, 4.0, 0.0]
    _, (grad,) = value_and_grad(
        lambda t: keras.ops.sum(similarity.l2_normalize(t)[:, 0]), x
    )
    assert np.isfinite(grad).all()
    # d(x0 / |x|) / dx at (3, 0, 4, 0): (|x|^2 - x0^2) / |x|^3 and -x0 xk / |x|^3.
    np.testing.assert_allclose(grad[0], [16 / 125, 0.0, -12 / 125, 0.0], atol=1e-6)


def test_cosine_similarity_correctness(rng):
    a = rng.standard_normal((6, 8)).astype("float16")
    b = 3.0 * rng.standard_normal((4, 8))
    got = _np(similarity.cosine_similarity(a, b))
    expected = _reference_normalize(a.astype(np.float64)) @ _reference_normalize(b).T
    assert got.shape == (6, 4) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize(
    "self_index, ref_valid",
    [
        (None, None),
        ([0, 1, 2, 3, 4], None),
        ([2, 3, 4, 5, 6], [True, True, False, True, True, True, False]),
    ],
)
def test_pair_masks_correctness(self_index, ref_valid):
    labels = np.array([1, 2, 1, 3, 2], "int32")
    ref_labels = np.array([1, 2, 1, 2, 1, 3, 2], "int32")
    sel = None if self_index is None else np.array(self_index, "int32")
    valid = None if ref_valid is None else np.array(ref_valid)
    positive, negative = similarity.pair_masks(labels, ref_labels, sel, valid)
    expected = _reference_masks(labels, ref_labels, self_index, ref_valid)
    np.testing.assert_array_equal(_np(positive), expected[0])
    np.testing.assert_array_equal(_np(negative), expected[1])


def test_pair_masks_self_pair_is_never_positive():
    labels = np.array([4, 4, 4], "int32")
    positive, negative = similarity.pair_masks(labels, labels, np.arange(3))
    np.testing.assert_array_equal(_np(positive), ~np.eye(3, dtype=bool))
    assert not _np(negative).any()


def test_masked_logsumexp_correctness(rng):
    logits = rng.uniform(-5.0, 5.0, (5, 9)).astype("float32")
    mask = rng.random((5, 9)) < 0.5
    mask[2] = False  # a row without any entry
    lse, nonempty = similarity.masked_logsumexp(logits, mask)
    np.testing.assert_allclose(_np(lse), _reference_logsumexp(logits, mask), rtol=1e-6)
    np.testing.assert_array_equal(_np(nonempty), mask.any(1))


def test_masked_logsumexp_own_row_maximum_at_large_gamma():
    """gamma=256 logits around -500 next to a masked-out +500 entry.

    With a maximum shared over the whole row, exp(-1000) underflows and the
    log-sum-exp is -inf; each masked set's own maximum keeps it finite.
    """
    logits = np.array([[500.0, -500.0, -501.0]], "float32")
    mask = np.array([[False, True, True]])
    lse, _ = similarity.masked_logsumexp(logits, mask)
    np.testing.assert_allclose(_np(lse), _reference_logsumexp(logits, mask), rtol=1e-6)


def test_masked_logsumexp_gradient_is_masked_softmax(rng):
    logits = rng.uniform(-3.0, 3.0, (4, 6)).astype("float32")
    mask = rng.random((4, 6)) < 0.6
    mask[1] = False

    def total(t):
        lse, nonempty = similarity.masked_logsumexp(t, mask)
        return keras.ops.sum(keras.ops.where(nonempty, lse, 0.0))

    _, (grad,) = value_and_grad(total, logits)
    expected = np.zeros((4, 6))
    for i in range(4):
        if mask[i].any():
            weights = np.where(mask[i], np.exp(logits[i].astype(np.float64)), 0.0)
            expected[i] = weights / weights.sum()
    # The empty row reads zero, and finite, gradients.
    np.testing.assert_allclose(grad, expected, atol=1e-6)


def _normalize_rows_cases(rng):
    x = rng.standard_normal((6, 5)).astype("float32")
    x[1] *= 1e30  # squared norm overflows: rescaled first
    x[2] *= 1e-30  # squared norm underflows: rescaled first
    x[3] = 0.0  # stays zero, finite gradient
    weights = rng.standard_normal((6, 5)).astype("float32")
    return x, weights


@pytest.mark.parametrize("mode", ["eager", "graph", "xla"])
def test_normalize_rows_matches_l2_normalize_values_and_gradients(rng, mode):
    """The hand-written gradient of `normalize_rows` (the proxies of
    `CosineProxies`) is autodiff's of `l2_normalize`, rescaled rows included,
    eagerly, in a plain TensorFlow graph (its XLA clusters) and under XLA."""
    from keras_circle.testing.backend import HAS_XLA
    from keras_circle.testing.backend import jit

    x, weights = _normalize_rows_cases(rng)
    backend = keras.backend.backend()
    if mode == "graph" and backend != "tensorflow":
        pytest.skip("TensorFlow graphs")
    if mode == "xla" and not HAS_XLA:
        pytest.skip("no XLA on this backend")

    weights = keras.ops.convert_to_tensor(weights)

    def objective(normalize):
        def fn(t):
            return keras.ops.sum(keras.ops.multiply(normalize(t), weights))

        if mode == "graph":
            import tensorflow as tf

            return tf.function(fn)
        return jit(fn) if mode == "xla" else fn

    value, (grad,) = value_and_grad(objective(similarity.normalize_rows), x)
    ref_value, (ref_grad,) = value_and_grad(objective(similarity.l2_normalize), x)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    np.testing.assert_allclose(
        grad, ref_grad, rtol=1e-5, atol=1e-6 * np.abs(ref_grad).max()
    )
    y = _np(similarity.normalize_rows(x))
    np.testing.assert_allclose(
        y,
        _reference_normalize(x / np.abs(x).max(1, keepdims=True).clip(1e-45)),
        atol=1e-6,
    )
    assert np.isfinite(grad).all()
