"""Tests of `keras_circle.export`: layout, servability, parity, atomicity, errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import onnx
import onnxruntime
import pytest
import tensorflow as tf

from keras_circle import export
from keras_circle.export import graph
from keras_circle.layers import CosineProxies
from tests.fresh_tf import serve_in_fresh_process

SHAPE = (32, 32, 3)
DIM = 16
SAVED_MODEL_CLI = Path(sys.executable).parent / "saved_model_cli"


def make_embedder(name="embedder"):
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(DIM)(x), name=name)


def make_trainer(num_classes=5):
    inputs = keras.Input(SHAPE)
    return keras.Model(inputs, CosineProxies(num_classes)(make_embedder()(inputs)))


def keras_reference(embedder, x):
    y = np.asarray(embedder(x, training=False), dtype="float64")
    return y / np.linalg.norm(y, axis=-1, keepdims=True)


def images(batch_size, seed=0):
    return (
        np.random.default_rng(seed)
        .uniform(0, 1, (batch_size, *SHAPE))
        .astype("float32")
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Version 1 from the model object, version 2 from its .keras file, ONNX."""
    root = tmp_path_factory.mktemp("export")
    trainer = make_trainer()
    trainer.save(root / "trainer.keras")
    base = root / "models" / "circle_embedder"
    v1 = export.export_saved_model(trainer, base, progress=False)
    v2 = export.export_saved_model(root / "trainer.keras", base, progress=False)
    onnx_path = export.export_onnx(trainer, root / "embedder.onnx", progress=False)
    return {
        "trainer": trainer,
        "embedder": trainer.layers[1],
        "base": base,
        "versions": (v1, v2),
        "onnx": onnx_path,
        "keras_file": root / "trainer.keras",
    }


def test_tf_serving_layout(exported):
    base = exported["base"]
    assert exported["versions"] == (str(base / "1"), str(base / "2"))
    assert sorted(os.listdir(base)) == ["1", "2"]  # no partial directory left
    for version in ("1", "2"):
        assert (base / version / "saved_model.pb").is_file()
        assert (base / version / "variables").is_dir()
        meta = json.loads((base / version / export.METADATA_PATH).read_text())
        assert meta["embedding_size"] == DIM
        assert meta["preprocessing"] == {
            "size": [32, 32],
            "channels": 3,
            "resize": "resize",
            "normalization": "zero_one",
            "mean": 0.0,
            "std": 255.0,
            "bgr": False,
        }
    assert export.next_version(base) == 3


def test_fresh_process_without_keras_circle(exported):
    """TF alone (what TF Serving runs) loads and serves the export."""
    x = images(3)
    body = """
        serve = loaded.signatures["serving_default"]
        out = serve(image=tf.constant(x))
        assert list(out) == ["embedding"], list(out)
        answer = {
            "inputs": sorted(serve.structured_input_signature[1]),
            "signatures": sorted(loaded.signatures),
            "dtype": out["embedding"].dtype.name,
            "embedding": out["embedding"].numpy().tolist(),
        }
        """
    answer = serve_in_fresh_process(exported["versions"][0], body, x)
    assert answer["inputs"] == ["image"]
    assert answer["signatures"] == ["serving_bytes", "serving_default"]
    assert answer["dtype"] == "float32"
    embedding = np.asarray(answer["embedding"])
    assert embedding.shape == (3, DIM)
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=-1), 1.0, atol=1e-6)
    want = keras_reference(exported["embedder"], x)
    np.testing.assert_allclose(embedding, want, atol=1e-5)


def test_saved_model_cli_show_and_run(exported, tmp_path):
    """The TF Serving debugging tool reads the signatures and runs the model.

    TF 2.21's `--input_exprs` only takes Python literals (no `np.zeros`), so
    the input goes through `--inputs` as a .npy file.
    """
    version = exported["versions"][1]
    x = images(2)
    np.save(tmp_path / "x.npy", x)
    commands = {
        "show": ["show", "--dir", version, "--all"],
        "run": [
            "run",
            "--dir",
            version,
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
            "--inputs",
            f"image={tmp_path / 'x.npy'}",
            "--outdir",
            str(tmp_path / "out"),
        ],
    }
    # Both at once: each spends most of its time importing TensorFlow.
    processes = {
        name: subprocess.Popen(
            [str(SAVED_MODEL_CLI), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in commands.items()
    }
    outputs = {}
    for name, process in processes.items():
        outputs[name], stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr[-2000:]
    assert "signature_def['serving_default']" in outputs["show"]
    assert "signature_def['serving_bytes']" in outputs["show"]
    assert "outputs['embedding']" in outputs["show"]
    embedding = np.load(tmp_path / "out" / "embedding.npy")
    want = keras_reference(exported["embedder"], x)
    np.testing.assert_allclose(embedding, want, atol=1e-5)


@pytest.mark.parametrize("batch_size", [1, 64])
def test_correctness_keras_saved_model_onnx(exported, batch_size):
    x = images(batch_size, seed=batch_size)
    want = keras_reference(exported["embedder"], x)
    loaded = tf.saved_model.load(exported["versions"][0])
    saved = loaded.signatures["serving_default"](image=tf.constant(x))["embedding"]
    session = onnxruntime.InferenceSession(exported["onnx"])
    from_onnx = session.run(["embedding"], {"image": x})[0]
    diffs = {
        "keras_vs_saved_model": np.abs(saved.numpy() - want).max(),
        "keras_vs_onnx": np.abs(from_onnx - want).max(),
        "saved_model_vs_onnx": np.abs(from_onnx - saved.numpy()).max(),
    }
    print(f"batch {batch_size}: {diffs}")
    assert max(diffs.values()) < 1e-5
    assert from_onnx.dtype == np.float32 and from_onnx.shape == (batch_size, DIM)


def test_bytes_signature_matches_float_path(exported):
    pixels = np.random.default_rng(3).integers(0, 256, (2, *SHAPE), dtype=np.uint8)
    encoded = tf.stack([tf.io.encode_png(p) for p in pixels])
    loaded = tf.saved_model.load(exported["versions"][0])
    from_bytes = loaded.signatures["serving_bytes"](image_bytes=encoded)["embedding"]
    from_float = loaded.signatures["serving_default"](
        image=tf.constant(pixels.astype("float32") / 255.0)
    )["embedding"]
    np.testing.assert_allclose(from_bytes.numpy(), from_float.numpy(), atol=1e-6)


def test_onnx_batch_axis_and_metadata(exported):
    proto = onnx.load(exported["onnx"])
    for value in [*proto.graph.input, *proto.graph.output]:
        tensor_type = value.type.tensor_type
        assert tensor_type.shape.dim[0].dim_param == "batch"
        assert tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [v.name for v in proto.graph.input] == ["image"]
    assert [v.name for v in proto.graph.output] == ["embedding"]
    props = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert props["embedding_size"] == DIM
    assert props["preprocessing"]["normalization"] == "zero_one"
    assert props["source"]
    assert max(props["max_abs_diff_vs_keras"].values()) < 1e-5
    assert proto.opset_import[0].version == 17


def test_dtype_mixed_precision_exports_float32(tmp_path):
    keras.config.set_dtype_policy("mixed_float16")
    trainer = make_trainer()
    keras.config.set_dtype_policy("float32")
    embedder = trainer.layers[1]
    assert embedder.output.dtype == "float16"
    version = export.export_saved_model(trainer, tmp_path / "base", progress=False)
    onnx_path = export.export_onnx(trainer, tmp_path / "e.onnx", progress=False)
    x = images(4)
    loaded = tf.saved_model.load(version)
    saved = loaded.signatures["serving_default"](image=tf.constant(x))["embedding"]
    assert saved.dtype == tf.float32
    from_onnx = onnxruntime.InferenceSession(onnx_path).run(None, {"image": x})[0]
    assert from_onnx.dtype == np.float32
    assert onnx.TensorProto.FLOAT16 not in {
        init.data_type for init in onnx.load(onnx_path).graph.initializer
    }
    # The export computes in float32; the float16 model rounds its activations.
    np.testing.assert_allclose(saved.numpy(), keras_reference(embedder, x), atol=1e-2)
    np.testing.assert_allclose(from_onnx, saved.numpy(), atol=1e-5)


def test_embedding_layer_and_bare_embedder(tmp_path):
    trainer = make_trainer()
    path = export.export_saved_model(
        trainer, tmp_path / "a", embedding_layer="embedder", progress=False
    )
    assert path.endswith(os.path.join("a", "1"))
    flat = keras.Sequential([keras.Input(SHAPE), keras.layers.Flatten()])
    flat.add(keras.layers.Dense(DIM, name="feature"))
    flat.add(keras.layers.Dense(3, activation="softmax", name="classifier"))
    export.export_saved_model(
        flat, tmp_path / "b", embedding_layer="feature", progress=False
    )
    bare = make_embedder()
    export.export_saved_model(bare, tmp_path / "c", version=7, progress=False)
    assert os.listdir(tmp_path / "c") == ["7"]
    with pytest.raises(FileExistsError, match="already exists"):
        export.export_saved_model(bare, tmp_path / "c", version=7, progress=False)


def test_failed_export_leaves_served_versions(exported, tmp_path, monkeypatch):
    base = tmp_path / "base"
    export.export_saved_model(exported["trainer"], base, progress=False)
    before = sorted(p.relative_to(base) for p in base.rglob("*"))

    def fail(*args, **kwargs):
        raise export.ExportVerificationError("injected")

    monkeypatch.setattr(graph.ServingGraph, "verify", fail)
    with pytest.raises(export.ExportVerificationError, match="injected"):
        export.export_saved_model(exported["trainer"], base, progress=False)
    with pytest.raises(export.ExportVerificationError, match="injected"):
        export.export_onnx(exported["trainer"], tmp_path / "x.onnx", progress=False)
    assert sorted(p.relative_to(base) for p in base.rglob("*")) == before
    assert sorted(os.listdir(tmp_path)) == ["base"]


def test_refuses_with_measured_difference(exported, tmp_path, monkeypatch):
    original = graph.ServingGraph.reference
    monkeypatch.setattr(
        graph.ServingGraph, "reference", lambda self, x: original(self, x) + 0.01
    )
    with pytest.raises(export.ExportVerificationError, match=r"differ.* by 0\.01"):
        export.export_saved_model(exported["trainer"], tmp_path / "b", progress=False)
    assert os.listdir(tmp_path / "b") == []


def test_refuses_nan_embedder(tmp_path):
    inputs = keras.Input(SHAPE)
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    nan = keras.layers.Dense(
        DIM, kernel_initializer=keras.initializers.Constant(np.nan)
    )
    model = keras.Model(inputs, nan(x))
    with pytest.raises(export.ExportVerificationError, match="non-finite"):
        export.export_saved_model(model, tmp_path / "base", progress=False)
    with pytest.raises(export.ExportVerificationError, match="non-finite"):
        export.export_onnx(model, tmp_path / "nan.onnx", progress=False)
    assert os.listdir(tmp_path / "base") == []
    assert sorted(os.listdir(tmp_path)) == ["base"]


def test_no_usable_embedding_output(tmp_path):
    inputs = keras.Input(SHAPE)
    feature_map = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
    with pytest.raises(ValueError, match="No usable embedding output.*shape"):
        export.export_saved_model(feature_map, tmp_path, progress=False)
    two = keras.Model(inputs, [keras.layers.Flatten()(inputs)] * 2)
    with pytest.raises(ValueError, match="2 outputs"):
        export.export_onnx(two, tmp_path / "two.onnx", progress=False)
    with pytest.raises(ValueError, match="Unknown preprocessing key.*'average'"):
        export.export_saved_model(
            make_embedder(), tmp_path, preprocessing={"average": 0.5}, progress=False
        )
    with pytest.raises(ValueError, match="does not match the model input"):
        export.export_saved_model(
            make_embedder(), tmp_path, preprocessing={"size": [8, 8]}, progress=False
        )


def test_base_dir_not_a_directory(exported, tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(NotADirectoryError, match="must be a directory"):
        export.export_saved_model(exported["trainer"], not_a_dir, progress=False)


def test_wrong_image_shape_at_serving_time(exported):
    loaded = tf.saved_model.load(exported["versions"][0])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[\?,32,32,3\]"):
        loaded.signatures["serving_default"](image=tf.zeros((2, 28, 28, 3)))
    session = onnxruntime.InferenceSession(exported["onnx"])
    with pytest.raises(Exception, match="Expected: 32"):
        session.run(None, {"image": np.zeros((2, 28, 28, 3), "float32")})
