"""Tests of the search inside exports: `serving_search` and the ONNX search outputs."""

import importlib.util
import json
import os
from pathlib import Path

import keras
import numpy as np
import onnx
import onnxruntime
import pytest

from keras_circle import export
from keras_circle.search import EmbeddingIndex
from tests.fresh_tf import serve_in_fresh_process

SHAPE = (16, 16, 3)
DIM = 8
TOP_K = 4


def make_embedder():
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(DIM)(x), name="embedder")


def images(batch_size, seed):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (batch_size, *SHAPE)).astype("float32")


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    keras.utils.set_random_seed(0)
    embedder = make_embedder()
    # Spread-out rows: scores of one query rarely tie.
    gallery = np.random.default_rng(1).normal(size=(30, DIM))
    fingerprint = export.model_fingerprint(embedder)
    index = EmbeddingIndex(DIM, embedder=export.fingerprint_id(fingerprint))
    index.add(gallery, ids=np.arange(1000, 1030), labels=np.arange(30) % 3)
    version = export.export_saved_model(
        embedder, root / "base", gallery=index, top_k=TOP_K, progress=False
    )
    onnx_path = export.export_onnx(
        embedder, root / "search.onnx", gallery=index, top_k=TOP_K, progress=False
    )
    return {
        "embedder": embedder,
        "index": index,
        "version": version,
        "onnx": onnx_path,
        "root": root,
    }


def assert_same_search(got_ids, got_scores, index, embeddings):
    """Equal ids up to ties and scores within 1e-5 of `index.search`."""
    want_scores, want_ids = index.search(embeddings, TOP_K)
    np.testing.assert_allclose(got_scores, want_scores, atol=1e-5)
    # Ranks whose score is within 1e-5 of a neighbour's may swap.
    gap = np.abs(np.diff(want_scores, axis=1)) < 1e-5
    tied = np.zeros_like(want_ids, dtype=bool)
    tied[:, 1:] |= gap
    tied[:, :-1] |= gap
    assert (~tied).sum() >= want_ids.size // 2  # the check still checks
    np.testing.assert_array_equal(got_ids[~tied], want_ids[~tied])


def test_serving_search_in_fresh_process_matches_index(searched):
    """TF alone loads `serving_search` and returns EmbeddingIndex.search's answer."""
    x = images(3, seed=5)
    body = """
        out = loaded.signatures["serving_search"](image=tf.constant(x))
        answer = {
            "signatures": sorted(loaded.signatures),
            "outputs": sorted(out),
            "dtypes": [out["ids"].dtype.name, out["scores"].dtype.name],
            "ids": out["ids"].numpy().tolist(),
            "scores": out["scores"].numpy().tolist(),
        }
        """
    answer = serve_in_fresh_process(searched["version"], body, x)
    assert answer["signatures"] == [
        "serving_bytes",
        "serving_default",
        "serving_search",
    ]
    assert answer["outputs"] == ["ids", "scores"]
    assert answer["dtypes"] == ["int64", "float32"]
    embeddings = np.asarray(searched["embedder"](x))
    assert_same_search(
        np.asarray(answer["ids"]),
        np.asarray(answer["scores"]),
        searched["index"],
        embeddings,
    )
    meta = json.loads(
        open(os.path.join(searched["version"], export.METADATA_PATH)).read()
    )
    assert meta["search"]["gallery_size"] == 30 and meta["search"]["top_k"] == TOP_K
    assert meta["max_abs_diff_vs_keras"]["search_scores"] < 1e-5


def test_onnx_search_outputs_match_index(searched):
    session = onnxruntime.InferenceSession(searched["onnx"])
    names = [o.name for o in session.get_outputs()]
    assert sorted(names) == ["embedding", "ids", "scores"]
    x = images(5, seed=6)
    ids, scores = session.run(["ids", "scores"], {"image": x})
    assert ids.dtype == np.int64 and scores.dtype == np.float32
    embeddings = np.asarray(searched["embedder"](x))
    assert_same_search(ids, scores, searched["index"], embeddings)
    ops = {node.op_type for node in onnx.load(searched["onnx"]).graph.node}
    assert {"MatMul", "TopK"} <= ops
    # The edge client (no TensorFlow) exposes the same search.
    path = Path(__file__).resolve().parents[1] / "serving" / "onnx_inference.py"
    spec = importlib.util.spec_from_file_location("onnx_inference", path)
    client_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(client_module)
    client = client_module.OnnxEmbedder(str(searched["onnx"]))
    assert client.has_search
    np.testing.assert_array_equal(client.search(x)[0], ids)


def test_top_k_capped_at_gallery_size_and_checked(searched, tmp_path):
    embedder = searched["embedder"]
    gallery = (np.random.default_rng(0).normal(size=(3, DIM)), np.array([7, 8, 9]))
    path = export.export_onnx(
        embedder, tmp_path / "small.onnx", gallery=gallery, top_k=10, progress=False
    )
    ids, scores = onnxruntime.InferenceSession(path).run(
        ["ids", "scores"], {"image": images(2, seed=7)}
    )
    assert ids.shape == (2, 3) and sorted(ids[0]) == [7, 8, 9]
    assert np.all(np.diff(scores, axis=1) <= 0)  # best first
    for top_k, message in [(0, "`top_k` must be a positive int"), (True, "`top_k`")]:
        with pytest.raises(ValueError, match=message):
            export.export_onnx(
                embedder,
                tmp_path / "x.onnx",
                gallery=gallery,
                top_k=top_k,
                progress=False,
            )
    bad = [
        ((gallery[0], np.array([1, 1, 2])), "ids must be unique"),
        ((gallery[0][:, :3], gallery[1]), "must have dim 8"),
        ((gallery[0], np.array([1.0, 2.0, 3.0])), "ids must be integers"),
        ("not-a-folder", "not a saved EmbeddingIndex"),
    ]
    for value, message in bad:
        with pytest.raises(ValueError, match=message):
            export.export_saved_model(
                embedder, tmp_path / "base", gallery=value, progress=False
            )
    other = EmbeddingIndex(DIM, embedder="another model")
    other.add(gallery[0])
    with pytest.raises(ValueError, match="built with another embedder"):
        export.export_saved_model(
            embedder, tmp_path / "base", gallery=other, progress=False
        )
    assert not os.path.exists(tmp_path / "base" / "1")


def test_onnx_gallery_above_the_measured_size_is_refused(
    searched, tmp_path, monkeypatch
):
    from keras_circle.export import exporters

    monkeypatch.setattr(exporters, "MAX_ONNX_GALLERY_VALUES", 8 * 29)
    with pytest.raises(
        ValueError, match=r"too large for ONNX search.*export_saved_model"
    ):
        export.export_onnx(
            searched["embedder"],
            tmp_path / "big.onnx",
            gallery=searched["index"],
            progress=False,
        )
    assert not (tmp_path / "big.onnx").exists()
