"""Tests for the packaged Fashion-MNIST subset."""

import json
import pathlib

import numpy as np

import keras_circle.data
from keras_circle import data


def test_load_fashion_mnist_subset():
    (x_train, y_train), (x_test, y_test), names = data.load_fashion_mnist_subset()
    assert x_train.shape == (8000, 28, 28) and x_train.dtype == np.uint8
    assert x_test.shape == (2000, 28, 28) and x_test.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(y_train), [800] * 10)
    np.testing.assert_array_equal(np.bincount(y_test), [200] * 10)
    assert names[0] == "T-shirt/top" and len(names) == 10
    assert x_train.std() > 50  # real images, not blanks


def test_files_ship_with_package_and_are_small():
    folder = pathlib.Path(keras_circle.data.__file__).parent
    assert (folder / "fashion_mnist_subset.npz").stat().st_size < 5_000_000
    meta = json.loads((folder / "fashion_mnist_subset.json").read_text())
    assert "MIT" in meta["licence"] and meta == data.fashion_mnist_subset_info()
    with np.load(folder / "fashion_mnist_subset.npz") as npz:
        assert npz["train_index"].max() < 60000 and npz["test_index"].max() < 10000
