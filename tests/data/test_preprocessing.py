"""Tests for keras_circle.data.preprocessing: shapes, ranges, determinism."""

import functools

import numpy as np
import pytest
import tensorflow as tf

from keras_circle import data

CASES = [
    (data.preprocess_face, (112, 112, 3)),
    (data.preprocess_reid, (256, 128, 3)),
    (data.preprocess_fine_grained, (224, 224, 3)),
]


def _image(h=300, w=200, c=3):
    return tf.constant(np.random.default_rng(0).integers(0, 256, (h, w, c)), tf.uint8)


@pytest.mark.parametrize("fn, shape", CASES)
@pytest.mark.parametrize("training", [False, True])
def test_shape_and_range(fn, shape, training):
    mapped = tf.data.Dataset.from_tensors((_image(), 3)).map(
        functools.partial(fn, training=training)
    )
    x, y = next(iter(mapped))
    assert x.shape == shape and x.dtype == tf.float32 and int(y) == 3
    if fn is data.preprocess_face:
        assert -1.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 1.0
    else:  # ImageNet normalisation of [0, 1] pixels
        assert -2.2 < float(tf.reduce_min(x)) and float(tf.reduce_max(x)) < 2.7


@pytest.mark.parametrize("fn, shape", CASES)
def test_deterministic_at_test_time_and_bytes_input(fn, shape):
    image = _image(c=1)  # grey input is repeated to RGB
    a, _ = fn(image, 0)
    b, _ = fn(image, 0)
    np.testing.assert_array_equal(a, b)
    png, _ = fn(tf.io.encode_png(image), 0)
    np.testing.assert_allclose(png, a)
    assert a.shape == shape


def test_symmetric_normalization_and_bad_name():
    x, _ = data.preprocess_reid(_image(), 0, normalization="symmetric")
    assert -1.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 1.0
    with pytest.raises(ValueError, match="`normalization` must be one of"):
        data.preprocess_fine_grained(_image(), 0, normalization="bogus")


def test_fine_grained_centre_crop():
    # A 512x1024 image: shorter side to 256, the centre 224 columns kept.
    ramp = np.tile(np.linspace(0, 255, 1024, dtype=np.float32), (512, 1))
    image = tf.constant(np.stack([ramp] * 3, -1).round().astype(np.uint8))
    x, _ = data.preprocess_fine_grained(image, 0, normalization="symmetric")
    assert abs(float(tf.reduce_mean(x))) < 0.01  # centred on the mid value


def test_random_erasing():
    tf.random.set_seed(0)
    image = tf.fill((256, 128, 3), 7.0)
    erased = [data.random_erasing(image) for _ in range(40)]
    changed = [float(tf.reduce_mean(tf.cast(e != 7.0, tf.float32))) for e in erased]
    assert 5 < sum(c > 0 for c in changed) < 35  # p = 0.5
    assert max(changed) <= 0.4 + 1e-6  # area at most 40 %
    assert data.random_erasing(image, probability=0.0).numpy().tolist() == (
        image.numpy().tolist()
    )
