"""Tests for keras_circle.data.fine_grained, offline (the `mock_tfds` fixture)."""

import warnings

import pytest

from keras_circle import data
from keras_circle.data import faces

NUM_EXAMPLES = 40  # what the `mock_tfds` fixture serves


@pytest.mark.parametrize(
    "name, cut", [("cub", 100), ("cars196", 98), ("stanford_online_products", 11318)]
)
def test_zero_shot_split(mock_tfds, name, cut):
    train = list(data.load_fine_grained(name, "train").as_numpy_iterator())
    test = list(data.load_fine_grained(name, "test").as_numpy_iterator())
    # The class split runs over TFDS train + test merged.
    assert mock_tfds == ["train+test"] * 2
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


def test_bad_name():
    with pytest.raises(ValueError, match="`name` must be one of"):
        data.load_fine_grained("mnist", "train")


@pytest.mark.parametrize("name", ["load_lfw_identities", "sample_verification_pairs"])
def test_lfw_loaders_old_path_warns_and_works(name):
    from keras_circle.data import fine_grained

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        moved = getattr(fine_grained, name)
    assert moved is getattr(faces, name) is getattr(data, name)
    assert [w.category for w in caught] == [DeprecationWarning]
    assert f"keras_circle.data.faces.{name}" in str(caught[0].message)


def test_unknown_attribute_is_still_an_attribute_error():
    from keras_circle.data import fine_grained

    with pytest.raises(AttributeError, match="load_lfw_pair"):
        fine_grained.load_lfw_pair  # noqa: B018
