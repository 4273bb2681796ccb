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


@pytest.mark.parametrize(
    "normalization, reference",
    [
        ("caffe", "resnet"),
        ("imagenet", "densenet"),
        ("symmetric", "mobilenet_v2"),
        ("zero_one", None),
    ],
)
def test_normalizations_match_keras_applications(normalization, reference):
    """Each convention equals the `preprocess_input` of the backbone that uses it."""
    import keras

    pixels = np.random.default_rng(1).integers(0, 256, (20, 30, 3)).astype("uint8")
    spec = data.make_spec([20, 30], normalization=normalization)
    got = data.test_time_image(tf.constant(pixels), spec).numpy()
    if reference is None:
        want = pixels / 255.0
    else:
        module = getattr(keras.applications, reference)
        want = keras.ops.convert_to_numpy(
            module.preprocess_input(pixels.astype("float32")[None])
        )[0]
        assert data.backbone_normalization(reference) == normalization
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_backbone_table_names():
    assert data.backbone_normalization("resnet50") == "caffe"
    assert data.backbone_normalization("resnet101v2") == "symmetric"
    assert data.backbone_normalization("inception_v3") == "symmetric"
    assert data.backbone_normalization("efficientnetb0") == "none"
    assert data.backbone_normalization("convnext_tiny") == "none"
    with pytest.raises(ValueError, match="Unknown backbone 'alexnet'"):
        data.backbone_normalization("alexnet")


def test_family_functions_are_their_specs_at_test_time():
    """preprocess_* at test time = test_time_image with the family's spec."""
    image = _image(h=90, w=150)
    cases = [
        (data.preprocess_face, data.face_spec()),
        (data.preprocess_reid, data.reid_spec()),
        (data.preprocess_fine_grained, data.fine_grained_spec()),
    ]
    for fn, spec in cases:
        np.testing.assert_array_equal(
            fn(image, 0)[0], data.test_time_image(image, spec)
        )
    assert data.fine_grained_spec()["resize"] == "resize_shorter_then_center_crop"


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"size": [8, 8], "normalization": "caffe", "channels": 1}, "needs 3 channels"),
        ({"size": [8, 8], "resize": "crop"}, "`resize` must be one of"),
        (
            {"size": [8, 8], "resize": "resize_shorter_then_center_crop"},
            "`shorter_side` must be an int >= the crop size 8",
        ),
        ({"size": [8, 8], "shorter_side": 9}, "only applies to"),
        ({"size": [8, 0]}, "`size` must be"),
        ({"size": [8, 8], "normalization": "zero_one", "std": 1.0}, "does not match"),
    ],
)
def test_bad_specs_are_rejected(spec, message):
    spec = {"channels": 3, **spec}
    with pytest.raises(ValueError, match=message):
        data.check_spec(spec)


def test_deprecated_minus_one_to_one_alias():
    with pytest.warns(DeprecationWarning, match="use 'symmetric'"):
        spec = data.make_spec(8, normalization="minus_one_to_one")
    assert spec["normalization"] == "symmetric"
