"""Tests for the glyph benchmark: tools/build_glyphs.py, data.glyph_build, data.glyphs.

They build the tiny set (matplotlib's bundled fonts, 60 classes x 8
typefaces) into a temporary folder; the CJK build needs Debian font
packages and is not run here.
"""

import importlib.util
import json
import pathlib

import numpy as np
import pytest

from keras_circle import data
from keras_circle.data import glyph_build
from keras_circle.data import glyph_fonts
from keras_circle.data import glyphs

_TOOL = pathlib.Path(__file__).resolve().parents[2] / "tools" / "build_glyphs.py"


@pytest.fixture(scope="module")
def builder():
    spec = importlib.util.spec_from_file_location("build_glyphs", _TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny(builder, tmp_path_factory):
    cache = tmp_path_factory.mktemp("glyphs")
    builder.main(["--name", "tiny", "--cache-dir", str(cache)])
    return cache


def test_load_glyphs_shapes_and_manifest(tiny):
    info = data.glyphs_info("tiny", cache_dir=tiny)
    train = data.load_glyphs("tiny", "train", cache_dir=tiny)
    test = data.load_glyphs("tiny", "test", cache_dir=tiny)
    assert train.images.shape == (40 * 8, 24, 24, 1)
    assert test.images.shape == (20 * 8, 24, 24, 1)
    assert train.images.dtype == np.uint8 and train.labels.dtype == np.int32
    # Every class is drawn once by every typeface, labels are 0..C-1.
    for split, num_classes in [(train, 40), (test, 20)]:
        np.testing.assert_array_equal(np.bincount(split.labels), [8] * num_classes)
        for c in range(num_classes):
            assert sorted(split.designs[split.labels == c]) == list(range(8))
    assert len(info["designs"]) == 8 == len(train.design_names)
    for design in info["designs"]:
        assert len(design["sha256"]) == 64 and design["licence"]
    assert info["versions"]["freetype"] and info["num_images"] == 480


def test_train_and_test_classes_are_disjoint(tiny):
    train = data.load_glyphs("tiny", "train", cache_dir=tiny)
    test = data.load_glyphs("tiny", "test", cache_dir=tiny)
    assert len(set(train.code_points) | set(test.code_points)) == 60
    assert not set(train.code_points) & set(test.code_points)


def test_glyphs_are_centred_on_their_ink(tiny):
    images = data.load_glyphs("tiny", "test", cache_dir=tiny).images[..., 0]
    size = images.shape[1]
    for image in images:
        rows = np.flatnonzero(image.any(1))
        cols = np.flatnonzero(image.any(0))
        assert abs((rows[0] + rows[-1]) / 2 - (size - 1) / 2) <= 0.5
        assert abs((cols[0] + cols[-1]) / 2 - (size - 1) / 2) <= 0.5
    assert (images > 0).mean() > 0.05  # ink, not blanks


def test_two_builds_give_the_same_checksums(builder, tiny, tmp_path):
    builder.main(["--name", "tiny", "--cache-dir", str(tmp_path)])
    first = data.glyphs_info("tiny", cache_dir=tiny)
    second = data.glyphs_info("tiny", cache_dir=tmp_path)
    assert first["sha256"] == second["sha256"]


def test_array_checksum_covers_dtype_and_shape():
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert glyphs.array_sha256(array) == glyphs.array_sha256(array.copy())
    assert glyphs.array_sha256(array) != glyphs.array_sha256(array.reshape(4, 3))
    assert glyphs.array_sha256(array) != glyphs.array_sha256(array.astype(np.int8))


def test_changed_images_are_rejected(tiny, tmp_path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "manifest.json").write_text((tiny / "tiny" / "manifest.json").read_text())
    with np.load(tiny / "tiny" / "glyphs.npz") as npz:
        arrays = {key: npz[key] for key in npz.files}
    arrays["images"][0, 0, 0] ^= 1
    np.savez(folder / "glyphs.npz", **arrays)
    with pytest.raises(ValueError, match="'images'.*does not match the sha256"):
        data.load_glyphs("tiny", "test", cache_dir=tmp_path)


def test_missing_cache_names_the_build_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="tools/build_glyphs.py --name cjk"):
        data.load_glyphs("cjk", cache_dir=tmp_path)


def test_bad_split_and_name_are_rejected(tiny):
    with pytest.raises(ValueError, match="`split` must be 'train' or 'test'"):
        data.load_glyphs("tiny", "val", cache_dir=tiny)
    with pytest.raises(ValueError, match="`name` must be"):
        data.load_glyphs("../tiny", cache_dir=tiny)


def test_missing_fonts_name_the_packages(builder, monkeypatch, tmp_path):
    missing = dict(glyph_fonts.CJK_DESIGNS[0], path=str(tmp_path / "absent.ttc"))
    monkeypatch.setattr(
        glyph_fonts, "CJK_DESIGNS", [missing, *glyph_fonts.CJK_DESIGNS[1:]]
    )
    with pytest.raises(SystemExit, match="apt-get install -y fonts-noto-cjk$"):
        builder.main(["--name", "cjk", "--cache-dir", str(tmp_path)])
    assert not (tmp_path / "cjk").exists()


def test_ensure_glyphs_builds_once(tmp_path, monkeypatch):
    folder = data.ensure_glyphs("tiny", tmp_path, verbose=False)
    assert folder == tmp_path / "tiny"
    first = data.glyphs_info("tiny", cache_dir=tmp_path)
    # A second call finds the set and renders nothing.
    monkeypatch.setattr(glyph_build, "build", None)
    assert data.ensure_glyphs("tiny", tmp_path) == folder
    assert data.glyphs_info("tiny", cache_dir=tmp_path) == first


def test_ensure_glyphs_without_fonts_names_every_package(tmp_path, monkeypatch):
    absent = [dict(d, path=str(tmp_path / "x.ttf")) for d in glyph_fonts.CJK_DESIGNS]
    monkeypatch.setattr(glyph_fonts, "CJK_DESIGNS", absent)
    with pytest.raises(glyph_fonts.MissingFontsError) as error:
        data.ensure_glyphs("cjk", tmp_path)
    assert error.value.packages == glyph_fonts.apt_packages("cjk")
    assert "apt-get install -y " + " ".join(error.value.packages) in str(error.value)
    assert not (tmp_path / "cjk").exists()


def test_glyph_metrics_scores_a_split(tiny):
    test = data.load_glyphs("tiny", "test", cache_dir=tiny)
    onehot = np.eye(20, dtype=np.float32)[test.labels]
    scores = data.glyph_metrics(onehot, test)
    assert scores["map_at_r"] == pytest.approx(1.0)
    assert scores["recall_at_k"] == {"1": 1.0, "2": 1.0, "4": 1.0, "8": 1.0}
    assert scores["cross_typeface_recall_at_k"] == {"1": 1.0, "4": 1.0}
    with pytest.raises(ValueError, match="one row per image"):
        data.glyph_metrics(onehot[:-1], test)


def test_cross_typeface_split(tiny):
    test = data.load_glyphs("tiny", "test", cache_dir=tiny)
    query, gallery = data.cross_typeface_split(test.designs, test.query_designs)
    assert len(query) + len(gallery) == len(test.designs)
    assert not np.intersect1d(query, gallery).size
    assert set(test.designs[query]) == set(test.query_designs)
    assert not set(test.designs[gallery]) & set(test.query_designs)
    # Every class has queries and gallery images.
    assert set(test.labels[query]) == set(test.labels[gallery]) == set(range(20))
    manifest = json.loads((tiny / "tiny" / "manifest.json").read_text())
    assert test.query_designs == manifest["query_designs"]


def test_cross_typeface_split_rejects_one_sided_groups():
    with pytest.raises(ValueError, match="some, but not all"):
        data.cross_typeface_split(np.array([0, 1, 0, 1]), [0, 1])
    with pytest.raises(ValueError, match="1-D integer array"):
        data.cross_typeface_split(np.array([0.0, 1.0]), [0])
