"""Tests of `keras-circle index` and `keras-circle search` (keras_circle.cli_search)."""

import json

import keras
import numpy as np
import pytest
from PIL import Image

from keras_circle import cli
from keras_circle import data
from keras_circle import export
from keras_circle.search import EmbeddingIndex


def make_model(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(6, 3, strides=2, activation="tanh")(inputs)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(8)(x), name="embedder")


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_search")
    (_, _), (x, y), _ = data.load_fashion_mnist_subset()
    x, y = x[:24], y[:24]
    np.savez(root / "gallery.npz", x=x, labels=y)
    make_model(0).save(root / "model.keras")
    make_model(1).save(root / "other.keras")
    queries = []
    for i in (3, 10):
        queries.append(root / f"query{i}.png")
        Image.fromarray(x[i]).save(queries[-1])
    return {"root": root, "x": x, "y": y, "queries": queries}


def test_index_then_search_round_trip(gallery, capsys):
    root = gallery["root"]
    code = cli.main(
        [
            "index",
            str(root / "model.keras"),
            str(root / "gallery.npz"),
            "--out",
            str(root / "index"),
            "--batch-size",
            "10",
            "--no-progress",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert "Indexed 24 images (8-d, flat)" in capsys.readouterr().out
    index = EmbeddingIndex.load(root / "index")
    fingerprint = export.model_fingerprint(root / "model.keras")
    assert index.embedder == export.fingerprint_id(fingerprint)
    sidecar = json.loads((root / "index" / "keras_circle_index.json").read_text())
    assert sidecar["preprocessing"]["normalization"] == "zero_one"
    queries = [str(q) for q in gallery["queries"]]
    assert cli.main(["search", str(root / "index"), *queries, "--k", "3"]) == 0
    out = capsys.readouterr().out
    for path, i in zip(queries, (3, 10), strict=True):
        block = out.split(path)[1].splitlines()
        # A gallery image finds itself first, with cosine 1 and its label.
        assert block[1].strip() == f"1. id={i}  score=1.0000  label={gallery['y'][i]}"
        assert len([line for line in block[1:4] if "id=" in line]) == 3


def test_search_refuses_another_model(gallery, capsys):
    root = gallery["root"]
    if not (root / "index").exists():
        cli.main(
            [
                "index",
                str(root / "model.keras"),
                str(root / "gallery.npz"),
                "--out",
                str(root / "index"),
                "--no-progress",
            ]
        )
    code = cli.main(
        [
            "search",
            str(root / "index"),
            str(gallery["queries"][0]),
            "--model",
            str(root / "other.keras"),
        ]
    )
    assert code == 1
    assert "is not the embedder" in capsys.readouterr().err


def test_index_a_folder_with_an_exported_model(gallery, tmp_path, capsys):
    """Labels from sub-folder names; a SavedModel version's recorded preprocessing."""
    version = export.export_saved_model(
        gallery["root"] / "model.keras", tmp_path / "base", progress=False
    )
    for i in range(6):
        folder = tmp_path / "images" / f"class{gallery['y'][i]}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(gallery["x"][i]).save(folder / f"{i}.png")
    out = tmp_path / "index"
    code = cli.main(["index", version, str(tmp_path / "images"), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    index = EmbeddingIndex.load(out)
    assert sorted(set(index.labels)) == sorted({f"class{c}" for c in gallery["y"][:6]})
    query = tmp_path / "images" / f"class{gallery['y'][0]}" / "0.png"
    assert cli.main(["search", str(out), str(query), "--k", "1"]) == 0
    assert f"score=1.0000  label=class{gallery['y'][0]}" in capsys.readouterr().out
    assert (
        cli.main(["index", version, str(tmp_path / "nothing.txt"), "--out", "x"]) == 1
    )
    assert "must be a folder of images or an .npz" in capsys.readouterr().err
