"""Served embeddings equal evaluated ones: the shared test-time preprocessing spec."""

import importlib.util
import io
import json
import warnings
from pathlib import Path

import keras
import numpy as np
import onnx
import pytest
import tensorflow as tf
from PIL import Image

from keras_circle import data
from keras_circle import export

ROOT = Path(__file__).resolve().parents[1]


def _onnx_inference():
    path = ROOT / "serving" / "onnx_inference.py"
    spec = importlib.util.spec_from_file_location("onnx_inference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def real_image(height, width, seed=0):
    """A colour image made of Fashion-MNIST tiles, `(height, width, 3)` uint8."""
    x = data.load_fashion_mnist_subset()[1][0]
    rng = np.random.default_rng(seed)
    tile = np.stack([x[i] for i in rng.choice(len(x), 3, replace=False)], -1)
    reps = (-(-height // 28), -(-width // 28), 1)
    return np.tile(tile, reps)[:height, :width]


def encode(pixels, fmt):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, quality=95)
    return buffer.getvalue()


def keras_embedding(embedder, x):
    y = np.asarray(embedder(np.asarray(x)[None]), dtype="float64")[0]
    return y / np.linalg.norm(y)


def make_embedder(shape, rescaling=None, nested=False):
    inputs = keras.Input(shape)
    layers = [] if rescaling is None else [keras.layers.Rescaling(rescaling)]
    layers += [
        keras.layers.Conv2D(4, 3, strides=2, activation="tanh"),
        keras.layers.GlobalAveragePooling2D(),
    ]
    if nested:
        x = keras.Sequential(layers, name="backbone")(inputs)
    else:
        x = inputs
        for layer in layers:
            x = layer(x)
    return keras.Model(inputs, keras.layers.Dense(6)(x), name="embedder")


def serve_bytes(version, encoded):
    loaded = tf.saved_model.load(version)
    out = loaded.signatures["serving_bytes"](image_bytes=tf.constant(encoded))
    return out["embedding"].numpy()


def test_fine_grained_centre_crop_served_equals_evaluated(tmp_path):
    """A non-square JPEG: `serving_bytes` = evaluation's shorter-side + centre crop."""
    embedder = make_embedder((24, 24, 3))
    spec = data.fine_grained_spec(size=24, resize=32, normalization="symmetric")
    version = export.export_saved_model(
        embedder, tmp_path / "base", preprocessing=spec, progress=False
    )
    encoded = [encode(real_image(40, 90), "JPEG"), encode(real_image(70, 30), "PNG")]
    served = serve_bytes(version, encoded)
    for got, image in zip(served, encoded, strict=True):
        x, _ = data.preprocess_fine_grained(
            tf.constant(image), 0, size=24, resize=32, normalization="symmetric"
        )
        np.testing.assert_allclose(got, keras_embedding(embedder, x), atol=1e-5)
    meta = json.loads((Path(version) / export.METADATA_PATH).read_text())
    assert meta["preprocessing"] == spec


def test_rescaling_model_is_not_scaled_twice(tmp_path):
    """`Rescaling(1/255)` first, nested: bytes path and ONNX client = Keras on pixels."""
    embedder = make_embedder((20, 20, 3), rescaling=1 / 255, nested=True)
    found = export.find_input_scaling(embedder)
    assert "Rescaling layer 'rescaling" in found and "inside 'backbone'" in found
    version = export.export_saved_model(embedder, tmp_path / "base", progress=False)
    onnx_path = export.export_onnx(embedder, tmp_path / "e.onnx", progress=False)
    pixels = real_image(33, 47)
    path = tmp_path / "img.png"
    Image.fromarray(pixels).save(path)
    raw = tf.image.resize(tf.constant(pixels, tf.float32), (20, 20))
    want = keras_embedding(embedder, raw)  # the model's own convention: raw pixels
    got = serve_bytes(version, [path.read_bytes()])[0]
    np.testing.assert_allclose(got, want, atol=1e-5)
    client = _onnx_inference().OnnxEmbedder(str(onnx_path))
    np.testing.assert_allclose(client.embed_files([path])[0], want, atol=1e-5)
    props = {p.key: json.loads(p.value) for p in onnx.load(onnx_path).metadata_props}
    assert props["preprocessing"]["normalization"] == "none"
    assert "Rescaling" in props["input_scaling"]


def test_explicit_scaling_of_a_self_rescaling_model_warns(tmp_path):
    embedder = make_embedder((20, 20, 3), rescaling=1 / 127.5)
    with pytest.warns(UserWarning, match="rescales its own input.*'none'"):
        export.export_onnx(
            embedder,
            tmp_path / "e.onnx",
            preprocessing={"normalization": "zero_one"},
            progress=False,
        )
    plain = make_embedder((20, 20, 3))
    assert export.find_input_scaling(plain) is None
    assert export.default_preprocessing(plain)["normalization"] == "zero_one"
    # A Rescaling that expects [0, 1] input (x * 2 - 1) takes no raw pixels.
    assert export.find_input_scaling(make_embedder((20, 20, 3), rescaling=2.0)) is None


def test_keras_applications_rescaling_inside_is_detected():
    backbone = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), include_top=False, weights=None, pooling="avg"
    )
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, keras.layers.Dense(4)(backbone(inputs)))
    assert "inside 'MobileNetV3Small'" in export.find_input_scaling(model)
    assert export.default_preprocessing(model)["normalization"] == "none"
    assert data.backbone_normalization(backbone.name) == "none"


def test_per_channel_imagenet_rescaling_is_detected():
    """keras-hub converters scale by 1 / (255 std) per channel (a `hub:` backbone)."""
    std = np.array([0.229, 0.224, 0.225])
    scale = list(1 / (255 * std))
    offset = list(-np.array([0.485, 0.456, 0.406]) / std)
    model = make_embedder((16, 16, 3))
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(scale, offset, name="hub_rescaling")(inputs)
    model = keras.Model(inputs, model(x))
    assert "'hub_rescaling'" in export.find_input_scaling(model)
    assert export.default_preprocessing(model)["normalization"] == "none"


def test_onnx_client_reproduces_centre_crop_and_caffe(tmp_path):
    """The NumPy client (no TF) = data.test_time_image, crop and BGR included."""
    embedder = make_embedder((24, 24, 3))
    spec = data.make_spec(
        24,
        normalization="caffe",
        resize="resize_shorter_then_center_crop",
        shorter_side=30,
    )
    path = export.export_onnx(
        embedder, tmp_path / "e.onnx", preprocessing=spec, progress=False
    )
    client = _onnx_inference().OnnxEmbedder(str(path))
    files = []
    for i, (h, w) in enumerate([(45, 80), (61, 37), (24, 24)]):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(real_image(h, w, seed=i)).save(files[-1])
    got = client.load_images(files)
    want = [data.test_time_image(tf.io.read_file(str(f)), spec) for f in files]
    np.testing.assert_allclose(got, np.stack(want), atol=1e-3)  # caffe: pixel units


def test_deprecated_scale_names_still_export(tmp_path):
    embedder = make_embedder((20, 20, 3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = export.export_onnx(
            embedder,
            tmp_path / "e.onnx",
            preprocessing={"scale": "minus_one_to_one"},
            progress=False,
        )
    messages = {str(w.message) for w in caught if w.category is DeprecationWarning}
    assert "preprocessing key 'scale' is deprecated; use 'normalization'." in messages
    assert any(
        "'minus_one_to_one' is deprecated; use 'symmetric'" in m for m in messages
    )
    props = {p.key: json.loads(p.value) for p in onnx.load(path).metadata_props}
    assert props["preprocessing"]["normalization"] == "symmetric"
    assert props["preprocessing"]["mean"] == 127.5
