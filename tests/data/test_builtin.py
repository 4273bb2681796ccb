"""Tests for keras_circle.data.builtin: small folders in the released layouts."""

import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from keras_circle import config as config_lib
from keras_circle import data
from keras_circle.config import schema

ROOT = pathlib.Path(__file__).parents[2]


def test_market1501_mini_has_the_released_layout():
    root = data.builtin_set("market1501_mini")
    folders = {"bounding_box_train", "bounding_box_test", "query"}
    assert folders <= {p.name for p in root.iterdir() if p.is_dir()}
    for folder in folders:
        for path in (root / folder).iterdir():
            data.parse_market1501_name(path.name)  # raises on a foreign name
            with Image.open(path) as image:
                assert (image.format, image.mode, image.size) == (
                    "JPEG",
                    "RGB",
                    (28, 56),
                )
    split = data.load_market1501(root)
    train, query, gallery = split["train"], split["query"], split["gallery"]
    assert train.num_ids == 60 and len(query) == 60
    assert set(train.original_ids).isdisjoint(query.ids)  # as released
    assert 0 in gallery.ids and -1 not in gallery.ids  # distractors stay, junk goes
    assert -1 in data.load_market1501(root, keep_junk=True)["gallery"].ids
    assert len(np.unique(np.concatenate([train.cams, gallery.cams]))) == 4
    # Every query has a match on another camera, and one on its own camera
    # that the protocol has to remove.
    for pid, cam in zip(query.ids, query.cams, strict=True):
        same = gallery.ids == pid
        assert (same & (gallery.cams != cam)).any()
        assert (same & (gallery.cams == cam)).any()


def test_faces_mini_reads_with_the_face_loaders():
    root = data.builtin_set("faces_mini")
    paths, labels, names = data.load_identity_folders(root / "train")
    assert len(names) == 150 and len(paths) == 750
    assert np.bincount(labels).min() == 5
    pairs = data.load_lfw_pairs(root / "pairs.txt", root / "lfw")
    assert len(pairs["is_same"]) == 300 and pairs["is_same"].mean() == 0.5
    # LFW View 2: folds are identity-disjoint.
    people = [
        {pathlib.Path(p).parent.name for p in pairs["paths_a"][pairs["folds"] == f]}
        for f in range(5)
    ]
    for i in range(5):
        for j in range(i):
            assert people[i].isdisjoint(people[j])
    header = (root / "pairs.txt").read_text().splitlines()[0].split()
    assert header == ["5", "30"]


def test_built_once_then_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_CIRCLE_CACHE_DIR", str(tmp_path))
    first = data.builtin_set("market1501_mini")
    assert first == tmp_path / "builtin" / "market1501_mini"
    stamp = (first / "manifest.json").stat().st_mtime_ns
    assert data.builtin_set("market1501_mini") == first
    assert (first / "manifest.json").stat().st_mtime_ns == stamp
    # Only the finished set is left: the staging folder was renamed.
    assert [p.name for p in (tmp_path / "builtin").iterdir()] == ["market1501_mini"]


def test_unfinished_or_outdated_set_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_CIRCLE_CACHE_DIR", str(tmp_path))
    half = tmp_path / "builtin" / "faces_mini"
    (half / "train").mkdir(parents=True)  # a copy without its manifest
    folder = data.builtin_set("faces_mini")
    assert (folder / "pairs.txt").is_file()
    (folder / "manifest.json").write_text(json.dumps({"version": -1}))
    (folder / "pairs.txt").unlink()
    assert (data.builtin_set("faces_mini") / "pairs.txt").is_file()


def test_data_path():
    assert data.data_path("/data/market") == "/data/market"
    assert data.data_path(None) is None
    pairs = data.data_path("builtin:faces_mini/pairs.txt")
    assert pathlib.Path(pairs) == data.builtin_set("faces_mini") / "pairs.txt"
    with pytest.raises(ValueError, match="'nope'.*faces_mini"):
        data.builtin_set("nope")


def test_builtin_set_names_match_the_schema():
    assert set(data.BUILTIN_SETS) == set(schema.BUILTIN_SOURCES)
    assert set(schema.BUILTIN_SOURCES) == set(
        config_lib.schema.typing.get_args(schema.BuiltinSet)
    )


@pytest.mark.parametrize(
    "override, match",
    [
        ("data.root=builtin:market", r"`data.root \(the set of 'builtin:market'\)`"),
        ("data.root=builtin:faces_mini/train", r"'identity_folders' folder"),
    ],
)
def test_config_rejects_a_wrong_builtin_set(override, match):
    with pytest.raises(config_lib.ConfigError, match=match):
        config_lib.load_config(ROOT / "configs/small/person_reid.json", [override])
