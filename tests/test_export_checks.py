"""Tests of what `keras_circle.export` refuses, and of the model fingerprint."""

import json
import math
import shutil

import keras
import onnx
import pytest

from keras_circle import export
from keras_circle.layers import CosineProxies

SHAPE = (8, 8, 3)
DIM = 4
FAST = dict(progress=False, verify_batch_size=2)


def make_embedder(dim=DIM, shape=SHAPE, name="embedder"):
    inputs = keras.Input(shape)
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(dim)(x), name=name)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A trainer, its .keras file, one SavedModel version and an ONNX file."""
    root = tmp_path_factory.mktemp("checks")
    inputs = keras.Input(SHAPE)
    trainer = keras.Model(inputs, CosineProxies(3)(make_embedder()(inputs)))
    trainer.save(root / "trainer.keras")
    base = root / "base"
    version = export.export_saved_model(trainer, base, **FAST)
    onnx_path = export.export_onnx(trainer, root / "e.onnx", **FAST)
    return {
        "trainer": trainer,
        "keras_file": root / "trainer.keras",
        "version": version,
        "onnx": onnx_path,
    }


@pytest.fixture
def base(published, tmp_path):
    """A copy of the published base directory (version 1)."""
    shutil.copytree(published["version"], tmp_path / "base" / "1")
    return tmp_path / "base"


def test_fingerprint_is_recorded_in_both_exports(published):
    fingerprint = export.model_fingerprint(published["trainer"])
    assert fingerprint["input_shape"] == [None, *SHAPE]
    assert fingerprint["embedding_size"] == DIM
    assert fingerprint["dtype"] == "float32"
    assert fingerprint["input_dtype"] == "float32"
    assert len(fingerprint["weights_sha256"]) == 64
    meta = json.loads(open(f"{published['version']}/{export.METADATA_PATH}").read())
    props = {
        p.key: json.loads(p.value) for p in onnx.load(published["onnx"]).metadata_props
    }
    assert meta["fingerprint"] == fingerprint
    assert props["fingerprint"] == fingerprint
    # The embedder alone and the saved file are the same embedder.
    assert export.model_fingerprint(published["trainer"].layers[1]) == fingerprint
    assert export.model_fingerprint(published["keras_file"]) == fingerprint


def test_fingerprint_changes_with_the_weights():
    model = make_embedder()
    before = export.model_fingerprint(model)
    kernel = model.layers[-1].kernel
    kernel.assign(kernel.numpy() + 1e-3)
    after = export.model_fingerprint(model)
    assert after["weights_sha256"] != before["weights_sha256"]
    assert {k: v for k, v in after.items() if k != "weights_sha256"} == {
        k: v for k, v in before.items() if k != "weights_sha256"
    }


def test_export_refuses_changed_embedding_size(base):
    with pytest.raises(
        ValueError, match=r"version 1 .*size 4; this model .* gives 8.*allow_shape"
    ):
        export.export_saved_model(make_embedder(dim=8), base, **FAST)
    assert sorted(p.name for p in base.iterdir()) == ["1"]


def test_export_refuses_changed_input_shape(base):
    with pytest.raises(
        ValueError, match=r"takes input \[None, 8, 8, 3\].* takes \[None, 16, 16, 3\]"
    ):
        export.export_saved_model(make_embedder(shape=(16, 16, 3)), base, **FAST)
    assert sorted(p.name for p in base.iterdir()) == ["1"]


def test_shape_check_reads_versions_without_fingerprint(base):
    """A version from an older keras-circle (or another tool): its signature."""
    (base / "1" / export.METADATA_PATH).unlink()
    with pytest.raises(ValueError, match=r"size 4; this model .* gives 8"):
        export.export_saved_model(make_embedder(dim=8), base, **FAST)


def test_allow_shape_change_publishes_next_version(base):
    path = export.export_saved_model(
        make_embedder(dim=8), base, allow_shape_change=True, **FAST
    )
    assert path == str(base / "2")


@pytest.mark.parametrize(
    "opset, error",
    [
        (0, ValueError),
        (12, ValueError),
        (19, ValueError),
        (True, TypeError),
        ("17", TypeError),
    ],
)
def test_invalid_opset_is_rejected(tmp_path, opset, error):
    with pytest.raises(
        error, match=r"`opset`.*" + ("from 13 to 18" if error is ValueError else "int")
    ):
        export.export_onnx(make_embedder(), tmp_path / "e.onnx", opset, **FAST)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("opset", [13, 18])
def test_opset_range_ends_export(tmp_path, opset):
    path = export.export_onnx(make_embedder(), tmp_path / "e.onnx", opset, **FAST)
    assert onnx.load(path).opset_import[0].version == opset


@pytest.mark.parametrize("atol", [math.nan, math.inf, -1e-5])
def test_invalid_atol_is_rejected(tmp_path, atol):
    with pytest.raises(ValueError, match=r"`atol` must be finite and >= 0"):
        export.export_saved_model(make_embedder(), tmp_path, atol=atol, **FAST)
    with pytest.raises(ValueError, match=r"`atol` must be finite and >= 0"):
        export.export_onnx(make_embedder(), tmp_path / "e.onnx", atol=atol, **FAST)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "version, error",
    [
        (0, ValueError),
        (-3, ValueError),
        (2**63, ValueError),
        (10**30, ValueError),
        (True, TypeError),
        (2.0, TypeError),
        ("2", TypeError),
    ],
    ids=str,
)
def test_invalid_version_is_rejected(tmp_path, version, error):
    with pytest.raises(error, match="`version` must be"):
        export.export_saved_model(make_embedder(), tmp_path, version, **FAST)
    assert list(tmp_path.iterdir()) == []


def test_largest_int64_version_is_accepted(tmp_path):
    path = export.export_saved_model(make_embedder(), tmp_path, 2**63 - 1, **FAST)
    assert path.endswith(str(2**63 - 1))


def test_integer_input_model_is_refused(tmp_path):
    inputs = keras.Input((6,), dtype="int32")
    x = keras.layers.Flatten()(keras.layers.Embedding(10, 3)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(DIM)(x))
    with pytest.raises(ValueError, match="input is int32; the exported signatures"):
        export.export_saved_model(model, tmp_path, **FAST)
    with pytest.raises(ValueError, match="input is int32"):
        export.export_onnx(model, tmp_path / "e.onnx", **FAST)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("exporter", ["export_saved_model", "export_onnx"])
def test_model_of_wrong_type_is_a_clear_error(tmp_path, exporter):
    with pytest.raises(
        TypeError,
        match=r"`model` must be a keras.Model or the path of a .keras file; "
        r"got 42 \(int\)",
    ):
        getattr(export, exporter)(42, tmp_path / "out", **FAST)
    with pytest.raises(FileNotFoundError, match="`model` .*missing.keras"):
        getattr(export, exporter)(tmp_path / "missing.keras", tmp_path / "o", **FAST)


def test_other_backend_is_a_one_line_error(tmp_path, monkeypatch):
    """An in-memory JAX model cannot be traced by TensorFlow: say what to run."""
    model = make_embedder()
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    for exporter in (export.export_saved_model, export.export_onnx):
        with pytest.raises(RuntimeError) as info:
            exporter(model, tmp_path / "out", **FAST)
        assert "\n" not in str(info.value)
        assert "KERAS_BACKEND=tensorflow keras-circle export model.keras" in str(
            info.value
        )
    assert list(tmp_path.iterdir()) == []


def test_verify_batch_size_is_checked(tmp_path):
    with pytest.raises(ValueError, match="`verify_batch_size` must be >= 1; got 0"):
        export.export_saved_model(
            make_embedder(), tmp_path, verify_batch_size=0, progress=False
        )
    assert list(tmp_path.iterdir()) == []
