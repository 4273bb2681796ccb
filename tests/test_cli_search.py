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


def _index(gallery, name, *flags):
    """A saved `keras-circle index` of the gallery by model.keras, built once."""
    out = gallery["root"] / name
    if not out.exists():
        args = ["index", str(gallery["root"] / "model.keras")]
        args += [str(gallery["root"] / "gallery.npz"), "--out", str(out)]
        assert cli.main([*args, "--no-progress", *flags]) == 0
    return out


def _export(gallery, model, base, *flags):
    args = ["export", str(gallery["root"] / model), "--base-dir", str(base)]
    return cli.main([*args, "--no-progress", *flags])


def test_export_normalization_and_center_crop_flags_set_the_served_spec(
    gallery, tmp_path, capsys
):
    flags = ("--normalization", "symmetric", "--center-crop", "32")
    assert _export(gallery, "model.keras", tmp_path / "base", *flags) == 0
    meta = json.loads((tmp_path / "base" / "1" / export.METADATA_PATH).read_text())
    spec = meta["preprocessing"]
    assert spec["normalization"] == "symmetric" and spec["mean"] == 127.5
    assert spec["resize"] == "resize_shorter_then_center_crop"
    assert spec["shorter_side"] == 32 and spec["size"] == [28, 28]
    # A crop smaller than the model input is refused, naming the key.
    flags = ("--center-crop", "20")
    assert _export(gallery, "model.keras", tmp_path / "small", *flags) == 1
    assert "`shorter_side` must be an int >= the crop size 28" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "small").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--scale", "none", "--normalization", "none"], "give --normalization only"),
        (["--top-k", "3"], "--top-k needs --gallery"),
        (["--gallery", "g", "--top-k", "0"], "--top-k must be >= 1; got 0"),
        (["--center-crop", "0"], "--center-crop must be a positive side length"),
    ],
)
def test_export_flag_misuse_is_a_usage_error(gallery, tmp_path, capsys, flags, message):
    assert _export(gallery, "model.keras", tmp_path / "base", *flags) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_export_gallery_adds_serving_search_with_the_index_preprocessing(
    gallery, tmp_path, capsys
):
    import tensorflow as tf

    index_dir = _index(gallery, "index_crop", "--center-crop", "32")
    flags = ("--gallery", str(index_dir), "--top-k", "3")
    assert _export(gallery, "model.keras", tmp_path / "base", *flags) == 0, (
        capsys.readouterr().err
    )
    version = tmp_path / "base" / "1"
    meta = json.loads((version / export.METADATA_PATH).read_text())
    # The index's recorded preprocessing became the export's.
    assert meta["preprocessing"]["shorter_side"] == 32
    loaded = tf.saved_model.load(str(version))
    x = np.stack(
        [data.test_time_image(gallery["x"][i], meta["preprocessing"]) for i in (3, 10)]
    )
    out = loaded.signatures[export.SEARCH_SIGNATURE](image=tf.constant(x))
    ids, scores = out[export.IDS_NAME].numpy(), out[export.SCORES_NAME].numpy()
    assert ids.shape == (2, 3) and ids.dtype == np.int64
    # Each gallery image finds itself first, as `keras-circle search` does.
    np.testing.assert_array_equal(ids[:, 0], [3, 10])
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    embedded = loaded.signatures[export.SERVING_SIGNATURE](image=tf.constant(x))
    want_scores, want_ids = EmbeddingIndex.load(index_dir).search(
        embedded[export.OUTPUT_NAME].numpy(), 3
    )
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    np.testing.assert_array_equal(ids, want_ids)


def test_export_gallery_of_another_model_or_preprocessing_is_refused(
    gallery, tmp_path, capsys
):
    index_dir = _index(gallery, "index")
    flags = ("--gallery", str(index_dir))
    assert _export(gallery, "other.keras", tmp_path / "a", *flags) == 1
    err = capsys.readouterr().err
    assert "was not built with MODEL" in err and "not comparable" in err
    bare = EmbeddingIndex(8)  # no embedder recorded: cannot be checked
    bare.add(np.random.default_rng(0).normal(size=(5, 8)))
    bare.save(tmp_path / "bare")
    assert (
        _export(
            gallery, "model.keras", tmp_path / "b", "--gallery", str(tmp_path / "bare")
        )
        == 1
    )
    assert "no embedder recorded" in capsys.readouterr().err
    flags += ("--normalization", "symmetric")
    assert _export(gallery, "model.keras", tmp_path / "c", *flags) == 1
    err = capsys.readouterr().err
    assert "was indexed with preprocessing {'normalization': 'zero_one'" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare"]


def test_index_flags_are_checked_as_export_checks_them(gallery, tmp_path, capsys):
    root = gallery["root"]
    args = ["index", str(root / "model.keras"), str(root / "gallery.npz")]
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args([*args, "--normalization", "minus_one_to_one"])
    out = tmp_path / "index"
    code = cli.main([*args, "--out", str(out), "--center-crop", "0", "--no-progress"])
    assert code == 1
    assert "--center-crop must be a positive side length; got 0" in (
        capsys.readouterr().err
    )
    assert not out.exists()
