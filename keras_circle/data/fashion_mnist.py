"""The Fashion-MNIST subset shipped inside keras_circle (no download).

8,000 training images (800 per class, from the official training split) and
2,000 test images (200 per class, from the official test split), uint8
28x28, built by `tools/build_fashion_mnist_subset.py` from Debian's
`dataset-fashion-mnist`. Fashion-MNIST is (c) 2017 Zalando SE, MIT licence;
provenance, checksums and the licence text are in `fashion_mnist_subset.json`
next to the data.
"""

import json
import pathlib

import numpy as np

_HERE = pathlib.Path(__file__).parent
_NPZ = _HERE / "fashion_mnist_subset.npz"
_META = _HERE / "fashion_mnist_subset.json"


def load_fashion_mnist_subset():
    """Loads the packaged Fashion-MNIST subset, offline.

    The two splits keep the official train/test separation, so the test
    images can serve as held-out queries and gallery for retrieval.

    Returns:
        `((x_train, y_train), (x_test, y_test), class_names)`: uint8 images
        `(n, 28, 28)`, int32 labels `(n,)` in 0-9, and the 10 class names
        (`class_names[label]`).

    Example:

    >>> (x_train, y_train), (x_test, y_test), names = (
    ...     keras_circle.data.load_fashion_mnist_subset())
    >>> x_train.shape, x_test.shape
    ((8000, 28, 28), (2000, 28, 28))
    """
    with np.load(_NPZ, allow_pickle=False) as data:
        train = (data["x_train"], data["y_train"])
        test = (data["x_test"], data["y_test"])
    class_names = json.loads(_META.read_text())["class_names"]
    return train, test, class_names


def fashion_mnist_subset_info():
    """Provenance of the packaged subset (source, licence, checksums) as a dict."""
    return json.loads(_META.read_text())
