"""Tests for keras_circle.data.fine_grained, offline with tfds.testing.mock_data.

TFDS's default mock draws bounding boxes with min > max, which its own
encoder rejects once images are read encoded (`SkipDecoding`), so the mock
here builds valid examples from each builder's feature spec, encodes and
serialises them with the builder's own features, and decodes them with the
caller's decoders, as a prepared data set would.
"""

import numpy as np
import pytest
import tensorflow as tf

from keras_circle import data

tfds = pytest.importorskip("tensorflow_datasets")

NUM_EXAMPLES = 40
REQUESTED_SPLITS = []


def _value(feature, i, rng):
    if isinstance(feature, tfds.features.Image):
        h, w, c = (s or 9 for s in feature.shape)
        return rng.integers(0, 256, (h, w, c), dtype=np.uint8)
    if isinstance(feature, tfds.features.ClassLabel):
        # 20 classes spread over both halves, two examples each.
        return (i % 20) * feature.num_classes // 20
    if isinstance(feature, tfds.features.BBoxFeature):
        return tfds.features.BBox(0.1, 0.2, 0.6, 0.7)
    if isinstance(feature, tfds.features.Text):
        return f"Person_{i % 5}"
    raise NotImplementedError(type(feature))


def _as_dataset(self, split=None, decoders=None, **kwargs):
    REQUESTED_SPLITS.append(str(split))
    features = self.info.features
    rng = np.random.default_rng(0)
    serialized = [
        features.serialize_example(
            {key: _value(f, i, rng) for key, f in features.items()}
        )
        for i in range(NUM_EXAMPLES)
    ]
    ds = tf.data.Dataset.from_tensor_slices(serialized)
    return ds.map(lambda s: features.deserialize_example(s, decoders=decoders))


@pytest.fixture
def mock_tfds():
    with tfds.testing.mock_data(as_dataset_fn=_as_dataset):
        yield


@pytest.mark.parametrize(
    "name, cut", [("cub", 100), ("cars196", 98), ("stanford_online_products", 11318)]
)
def test_zero_shot_split(mock_tfds, name, cut):
    REQUESTED_SPLITS.clear()
    train = list(data.load_fine_grained(name, "train").as_numpy_iterator())
    test = list(data.load_fine_grained(name, "test").as_numpy_iterator())
    # The class split runs over TFDS train + test merged.
    assert REQUESTED_SPLITS == ["train+test"] * 2
    assert len(train) + len(test) == NUM_EXAMPLES
    assert all(ex["label"] < cut for ex in train) and train
    assert all(ex["label"] >= cut for ex in test) and test
    assert isinstance(train[0]["image"], bytes)  # left encoded


def test_fine_grained_end_to_end(mock_tfds):
    src = data.TfdsSource(data.load_fine_grained("cub", "train"))
    ds = data.pk_batches(
        src, 2, 2, seed=0, epochs=1, preprocess=data.preprocess_fine_grained
    )
    x, y = next(iter(ds))
    assert x.shape == (4, 224, 224, 3) and (y.numpy() < 100).all()


def test_lfw_identities_and_pairs(mock_tfds):
    ds, labels, names = data.load_lfw_identities()
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


def test_bad_name():
    with pytest.raises(ValueError, match="`name` must be one of"):
        data.load_fine_grained("mnist", "train")
