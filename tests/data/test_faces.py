"""Tests for keras_circle.data.faces: identity folders, LFW pairs.txt, LFW from TFDS."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_circle import data


def _jpeg(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 6, 3), 90, np.uint8)).save(path, "JPEG")


def test_load_identity_folders(tmp_path):
    for name, count in [("0000099", 2), ("0000045", 3), ("empty", 0)]:
        (tmp_path / name).mkdir()
        for i in range(count):
            _jpeg(tmp_path / name / f"{i:03d}.jpg")
    paths, labels, names = data.load_identity_folders(tmp_path)
    assert names == ["0000045", "0000099"]
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1])
    assert paths[3].endswith("0000099/000.jpg")
    ds = data.files_dataset(paths, labels, preprocess=data.preprocess_face)
    x, y = next(iter(ds))
    assert x.shape == (112, 112, 3) and int(y) == 0


@pytest.fixture
def lfw(tmp_path):
    root = tmp_path / "lfw"
    for name, idx in [
        ("Abel_Pacheco", 1),
        ("Abel_Pacheco", 4),
        ("Jo_Doe", 2),
        ("Ann_Lee", 1),
        ("Ann_Lee", 3),
        ("Bo_Li", 1),
    ]:
        _jpeg(root / name / f"{name}_{idx:04d}.jpg")
    lines = [
        "2 1",
        "Abel_Pacheco\t1\t4",
        "Abel_Pacheco 1 Jo_Doe 2",
        "Ann_Lee 1 3",
        "Ann_Lee 3 Bo_Li 1",
    ]
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_load_lfw_pairs(lfw):
    pairs = data.load_lfw_pairs(lfw / "pairs.txt", lfw / "lfw")
    np.testing.assert_array_equal(pairs["is_same"], [True, False, True, False])
    np.testing.assert_array_equal(pairs["folds"], [0, 0, 1, 1])
    assert pairs["paths_a"][0].endswith("Abel_Pacheco/Abel_Pacheco_0001.jpg")
    assert pairs["paths_b"][1].endswith("Jo_Doe/Jo_Doe_0002.jpg")


@pytest.mark.parametrize(
    "line, error, match",
    [
        ("Ann_Lee 1 3 4", ValueError, r"pairs.txt, line 4: expected 'name idx1 idx2'"),
        ("Ann_Lee 1 9", FileNotFoundError, r"line 4: image .*Ann_Lee_0009.jpg"),
    ],
)
def test_lfw_pairs_errors(lfw, line, error, match):
    lines = (lfw / "pairs.txt").read_text().splitlines()
    lines[3] = line
    (lfw / "pairs.txt").write_text("\n".join(lines))
    with pytest.raises(error, match=match):
        data.load_lfw_pairs(lfw / "pairs.txt", lfw / "lfw")


def test_lfw_identities_and_pairs(mock_tfds):
    ds, labels, names = data.load_lfw_identities()
    assert mock_tfds == ["train"]
    assert names == [f"Person_{i}" for i in range(5)]
    got = [int(ex["label"]) for ex in ds.as_numpy_iterator()]
    np.testing.assert_array_equal(got, labels)
    ex = next(iter(ds))
    assert tf.io.decode_image(ex["image"]).shape == (250, 250, 3)
    pairs = data.sample_verification_pairs(labels, num_folds=2, pairs_per_fold=3)
    same = labels[pairs["index_a"]] == labels[pairs["index_b"]]
    np.testing.assert_array_equal(same, pairs["is_same"])
    assert (pairs["index_a"] != pairs["index_b"]).all()
    np.testing.assert_array_equal(pairs["folds"], [0] * 6 + [1] * 6)
