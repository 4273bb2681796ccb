"""Tests for keras_circle.data.reid on tiny folders in the released layouts."""

import numpy as np
import pytest
from PIL import Image

from keras_circle import data


def _jpeg(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 4, 3), 128, np.uint8)).save(path, "JPEG")


@pytest.fixture
def market(tmp_path):
    root = tmp_path / "Market-1501-v15.09.15"
    for name in [
        "0002_c1s1_000451_03.jpg",
        "0002_c2s1_000301_01.jpg",
        "0007_c3s3_077419_03.jpg",
        "-1_c1s1_000401_03.jpg",
    ]:
        _jpeg(root / "bounding_box_train" / name)
    (root / "bounding_box_train" / "Thumbs.db").write_bytes(b"x")
    _jpeg(root / "query" / "0002_c3s1_000551_00.jpg")
    for name in [
        "0002_c1s1_000801_01.jpg",
        "0000_c1s1_000001_05.jpg",
        "-1_c2s1_000051_02.jpg",
        "0009_c6s2_000101_01.jpg",
    ]:
        _jpeg(root / "bounding_box_test" / name)
    return root


def test_parse_market1501_name():
    assert data.parse_market1501_name("0002_c1s1_000451_03.jpg") == (2, 1)
    assert data.parse_market1501_name("-1_c6s3_012345_01.jpg") == (-1, 6)
    assert data.parse_market1501_name("0000_c5s2_000001_07.jpg") == (0, 5)


def test_load_market1501(market):
    splits = data.load_market1501(market)
    train, query, gallery = splits["train"], splits["query"], splits["gallery"]
    assert len(train) == 3  # junk left out of training
    np.testing.assert_array_equal(train.original_ids, [2, 2, 7])
    np.testing.assert_array_equal(train.ids, [0, 0, 1])  # relabelled 0..N-1
    np.testing.assert_array_equal(train.cams, [1, 2, 3])
    np.testing.assert_array_equal(query.ids, [2])
    np.testing.assert_array_equal(sorted(gallery.ids), [0, 2, 9])  # distractor kept
    with_junk = data.load_market1501(market, keep_junk=True)["gallery"]
    assert -1 in with_junk.ids and len(with_junk) == 4
    images = [x.shape for x, _ in train.dataset()]
    assert images == [(8, 4, 3)] * 3


def test_market1501_errors(market, tmp_path):
    _jpeg(market / "query" / "0002_c1_bad.jpg")
    with pytest.raises(ValueError, match="0002_c1_bad.jpg"):
        data.load_market1501(market)
    (market / "query" / "0002_c1_bad.jpg").unlink()
    for path in (market / "query").iterdir():
        path.unlink()
    (market / "query").rmdir()
    with pytest.raises(FileNotFoundError, match="query"):
        data.load_market1501(market)


@pytest.fixture
def msmt(tmp_path):
    root = tmp_path / "MSMT17_V1"
    lists = {
        "list_train.txt": (
            "train",
            [
                "0000/0000_000_01_0303morning_0015_0.jpg 0",
                "0000/0000_001_05_0303morning_0036_1.jpg 0",
            ],
        ),
        "list_val.txt": ("train", ["0001/0001_000_12_0303noon_1010_2.jpg 1"]),
        "list_query.txt": ("test", ["0000/0000_000_15_0113morning_0244_0.jpg 0"]),
        "list_gallery.txt": (
            "test",
            [
                "0000/0000_002_03_0113noon_0800_0.jpg 0",
                "0003/0003_000_07_0114afternoon_0040_1.jpg 3",
            ],
        ),
    }
    for list_name, (folder, lines) in lists.items():
        for line in lines:
            _jpeg(root / folder / line.split()[0])
        (root / list_name).write_text("\n".join(lines) + "\n")
    return root


def test_load_msmt17(msmt):
    splits = data.load_msmt17(msmt)
    np.testing.assert_array_equal(splits["train"].ids, [0, 0, 1])
    np.testing.assert_array_equal(splits["train"].cams, [1, 5, 12])
    np.testing.assert_array_equal(splits["query"].cams, [15])
    np.testing.assert_array_equal(splits["gallery"].ids, [0, 3])
    assert "val" in data.load_msmt17(msmt, include_val=False)
    assert data.parse_msmt17_name("0000_000_01_0303morning_0015_0.jpg") == (0, 1)


def test_msmt17_errors(msmt):
    good = (msmt / "list_query.txt").read_text()
    (msmt / "list_query.txt").write_text(good.strip() + " extra\n")
    with pytest.raises(ValueError, match=r"list_query.txt, line 1"):
        data.load_msmt17(msmt)
    (msmt / "list_query.txt").write_text("0000/0000_009_02_0113noon_0001_0.jpg 0\n")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_msmt17(msmt)
