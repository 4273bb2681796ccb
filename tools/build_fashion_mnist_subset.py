"""Build the Fashion-MNIST subset that ships inside keras_circle (no download).

Reads the official IDX files of Debian's `dataset-fashion-mnist` package
(`apt-get install -y dataset-fashion-mnist`, files under
/usr/share/datasets/fashion-mnist) and writes
`keras_circle/data/fashion_mnist_subset.npz` plus a JSON file with the class
names, provenance and licence next to it.

The first `--train-per-class` images of each class in the official training
split and the first `--test-per-class` images of each class in the official
test split are kept, in their original order, so the subset is deterministic
and keeps the official split: no test image was ever a training image. The
positions in the official files are stored too (`train_index`, `test_index`).

Usage:

    python tools/build_fashion_mnist_subset.py [--source DIR] [--out DIR]
"""

import argparse
import gzip
import hashlib
import json
import pathlib

import numpy as np

CLASS_NAMES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
# The upstream licence, reproduced with the images as it requires.
MIT_TEXT = (
    "Permission is hereby granted, free of charge, to any person obtaining a "
    "copy of this software and associated documentation files (the "
    '"Software"), to deal in the Software without restriction, including '
    "without limitation the rights to use, copy, modify, merge, publish, "
    "distribute, sublicense, and/or sell copies of the Software, and to permit "
    "persons to whom the Software is furnished to do so, subject to the "
    "following conditions: The above copyright notice and this permission "
    "notice shall be included in all copies or substantial portions of the "
    'Software. THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, '
    "EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF "
    "MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN "
    "NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, "
    "DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR "
    "OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE "
    "USE OR OTHER DEALINGS IN THE SOFTWARE."
)
REPO = pathlib.Path(__file__).resolve().parents[1]


def read_idx(path):
    """Reads a gzipped IDX file (the MNIST format) into a numpy array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    # Header: two zero bytes, a type code (0x08 = uint8), the number of
    # dimensions, then one big-endian int32 per dimension.
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path}: not an uint8 IDX file.")
    ndim = data[3]
    shape = tuple(
        int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)
    )
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    return array.reshape(shape), hashlib.sha256(data).hexdigest()


def first_per_class(labels, per_class):
    """Positions of the first `per_class` samples of each class, sorted."""
    keep = [np.flatnonzero(labels == c)[:per_class] for c in range(10)]
    if min(len(k) for k in keep) < per_class:
        raise ValueError(f"Fewer than {per_class} samples in a class.")
    return np.sort(np.concatenate(keep))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--out", default=str(REPO / "keras_circle" / "data"))
    parser.add_argument("--train-per-class", type=int, default=800)
    parser.add_argument("--test-per-class", type=int, default=200)
    args = parser.parse_args(argv)
    source, out = pathlib.Path(args.source), pathlib.Path(args.out)

    provenance = {}
    splits = {}
    for split, prefix, per_class in [
        ("train", "train", args.train_per_class),
        ("test", "t10k", args.test_per_class),
    ]:
        images, images_sha = read_idx(source / f"{prefix}-images-idx3-ubyte.gz")
        labels, labels_sha = read_idx(source / f"{prefix}-labels-idx1-ubyte.gz")
        index = first_per_class(labels, per_class)
        splits[split] = (images[index], labels[index].astype(np.int32), index)
        provenance[f"{prefix}-images-idx3-ubyte.gz"] = images_sha
        provenance[f"{prefix}-labels-idx1-ubyte.gz"] = labels_sha

    npz_path = out / "fashion_mnist_subset.npz"
    np.savez_compressed(
        npz_path,
        x_train=splits["train"][0],
        y_train=splits["train"][1],
        train_index=splits["train"][2].astype(np.int32),
        x_test=splits["test"][0],
        y_test=splits["test"][1],
        test_index=splits["test"][2].astype(np.int32),
        class_names=np.array(CLASS_NAMES),
    )
    meta = {
        "name": "Fashion-MNIST subset",
        "class_names": CLASS_NAMES,
        "train_per_class": args.train_per_class,
        "test_per_class": args.test_per_class,
        "selection": "first N images of each class, in official file order; "
        "train from the official training split, test from the official "
        "test split (train_index/test_index are the positions in them)",
        "source": "Debian package dataset-fashion-mnist "
        "(0.0~git20200523.55506a9-1), /usr/share/datasets/fashion-mnist",
        "upstream": "https://github.com/zalandoresearch/fashion-mnist",
        "licence": "MIT (Expat), Copyright (c) 2017 Zalando SE",
        "licence_text": MIT_TEXT,
        "citation": "Han Xiao, Kashif Rasul, Roland Vollgraf. Fashion-MNIST: a "
        "Novel Image Dataset for Benchmarking Machine Learning Algorithms. "
        "arXiv:1708.07747, 2017.",
        "sha256_of_source_files": provenance,
        "builder": "tools/build_fashion_mnist_subset.py",
    }
    (out / "fashion_mnist_subset.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {npz_path} ({npz_path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
