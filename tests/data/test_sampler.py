"""Tests for keras_circle.data.sampler: P x K structure, seeding, sources, tf.distribute."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_circle import data
from tests.mirrored import mirrored_strategy


def _labels():
    # 10 classes of 10 samples, plus class 42 with a single sample.
    labels = np.repeat(np.arange(10), 10)
    labels[-1] = 42
    return labels


def _source():
    labels = _labels()
    # x holds the sample index, so batches can be traced back.
    return data.ArraySource(np.arange(len(labels)), labels)


def _batches(ds):
    return [(x.numpy(), y.numpy()) for x, y in ds]


def test_pk_structure():
    src = _source()
    batches = _batches(data.pk_batches(src, 4, 3, seed=1, epochs=2))
    assert len(batches) == 2 * (100 // 12)
    for x, y in batches:
        assert x.shape == (12,)
        np.testing.assert_array_equal(src.labels[x], y)
        classes = y.reshape(4, 3)
        assert (classes == classes[:, :1]).all()  # class after class
        assert len(set(classes[:, 0])) == 4  # distinct classes
        for row, c in zip(x.reshape(4, 3), classes[:, 0], strict=True):
            if c != 42:
                assert len(set(row)) == 3  # without replacement when possible


def test_small_class_with_replacement():
    plan = data.epoch_plan(_labels(), 10, 3, seed=0, epoch=0, steps=3)
    rows = plan.reshape(-1, 3)
    single = rows[(rows == 99).any(axis=1)]
    assert len(single) >= 1 and (single == 99).all()


def test_seeded_and_reproducible():
    a = _batches(data.pk_batches(_source(), 4, 3, seed=7, epochs=1))
    b = _batches(data.pk_batches(_source(), 4, 3, seed=7, epochs=1))
    c = _batches(data.pk_batches(_source(), 4, 3, seed=8, epochs=1))
    np.testing.assert_array_equal(np.stack([x for x, _ in a]), [x for x, _ in b])
    assert not np.array_equal(np.stack([x for x, _ in a]), [x for x, _ in c])


def test_epochs_differ_and_endless():
    ds = data.pk_batches(_source(), 4, 3, seed=7, steps_per_epoch=2)
    assert ds.cardinality() == tf.data.INFINITE_CARDINALITY
    xs = [x for x, _ in _batches(ds.take(6))]
    assert not np.array_equal(xs[0], xs[2])  # epoch 1 is not epoch 0
    again = data.epoch_plan(_labels(), 4, 3, seed=7, epoch=2, steps=2)
    np.testing.assert_array_equal(np.stack(xs[4:6]), again)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(p=1, k=3), "`p` must be an integer >= 2"),
        (dict(p=4, k=1), "`k` must be an integer >= 2"),
        (
            dict(p=12, k=2),
            r"`p`=12 is larger than the number of classes in the source \(11\)",
        ),
        (dict(p=4, k=3, steps_per_epoch=0), "`steps_per_epoch` must be >= 1"),
    ],
)
def test_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.pk_batches(_source(), seed=0, **kwargs)


def test_preprocess_after_sampling():
    ds = data.pk_batches(
        _source(), 2, 2, seed=0, epochs=1, preprocess=lambda x, y: (x * 10, y + 1)
    )
    x, y = next(iter(ds))
    np.testing.assert_array_equal(_labels()[x.numpy() // 10] + 1, y.numpy())


def test_file_source(tmp_path):
    paths, labels = [], []
    for i in range(12):
        path = tmp_path / f"img_{i}.png"
        Image.fromarray(np.full((5, 4, 3), i, np.uint8)).save(path)
        paths.append(path)
        labels.append(i // 3)
    src = data.FileSource(paths, labels)
    x, y = next(iter(data.pk_batches(src, 2, 3, seed=0, epochs=1)))
    assert x.shape == (6, 5, 4, 3) and x.dtype == tf.uint8
    np.testing.assert_array_equal(x.numpy()[:, 0, 0, 0] // 3, y.numpy())


def test_tfds_source_keeps_images_encoded():
    images = [tf.io.encode_png(np.full((3, 3, 3), i, np.uint8)) for i in range(8)]
    ds = tf.data.Dataset.from_tensor_slices(
        {"image": tf.stack(images), "class_id": np.arange(8) // 2}
    )
    src = data.TfdsSource(ds, label_key="class_id")
    assert src.encoded and src.images.dtype == object
    x, y = next(iter(data.pk_batches(src, 2, 2, seed=0, epochs=1)))
    assert x.shape == (4, 3, 3, 3)
    np.testing.assert_array_equal(x.numpy()[:, 0, 0, 0] // 2, y.numpy())
    with pytest.raises(ValueError, match="`label_key`='label' is not a feature"):
        data.TfdsSource(ds)


def _global_batches(steps):
    ds = data.pk_batches(_source(), 4, 3, seed=3, epochs=1, steps_per_epoch=steps)
    return [x for x, _ in _batches(ds)]


def test_experimental_distribute_dataset_two_replicas():
    strategy = mirrored_strategy()
    assert strategy.num_replicas_in_sync == 2
    ds = data.pk_batches(_source(), 4, 3, seed=3, epochs=1, steps_per_epoch=3)
    seen = []
    for x, _ in strategy.experimental_distribute_dataset(ds):
        parts = [t.numpy() for t in strategy.experimental_local_results(x)]
        assert [len(p) for p in parts] == [6, 6]
        seen.append(np.concatenate(parts))
    np.testing.assert_array_equal(np.stack(seen), _global_batches(3))


def test_distribute_datasets_from_function_two_replicas():
    strategy = mirrored_strategy()
    fn = data.pk_dataset_fn(_source(), 4, 3, seed=3, epochs=1, steps_per_epoch=3)
    seen = []
    for x, y in strategy.distribute_datasets_from_function(fn):
        parts = [t.numpy() for t in strategy.experimental_local_results(x)]
        labels = [t.numpy() for t in strategy.experimental_local_results(y)]
        for part in labels:  # two whole classes per replica
            assert (part.reshape(2, 3) == part.reshape(2, 3)[:, :1]).all()
        seen.append(np.concatenate(parts))
    np.testing.assert_array_equal(np.stack(seen), _global_batches(3))


def test_per_pipeline_shards_do_not_duplicate():
    fn = data.pk_dataset_fn(_source(), 4, 3, seed=3, epochs=1, steps_per_epoch=3)
    shards = [
        [x for x, _ in _batches(fn(tf.distribute.InputContext(2, i, 2)))]
        for i in range(2)
    ]
    for step, full in enumerate(_global_batches(3)):
        np.testing.assert_array_equal(
            np.concatenate([shards[0][step], shards[1][step]]), full
        )
    with pytest.raises(ValueError, match="multiple of the number of replicas"):
        fn(tf.distribute.InputContext(1, 0, 3))


@pytest.mark.parametrize("epochs", [0, -1, 1.5, True])
def test_non_positive_epochs_are_rejected(epochs):
    with pytest.raises(ValueError, match=rf"`epochs` must be a positive.*{epochs!r}"):
        data.pk_batches(_source(), 4, 3, seed=0, epochs=epochs)
    with pytest.raises(ValueError, match="`epochs` must be a positive"):
        data.pk_dataset_fn(_source(), 4, 3, seed=0, epochs=epochs)


@pytest.mark.parametrize("seed", [-1, 1.5, None, "7"])
def test_bad_seed_is_rejected_when_the_dataset_is_built(seed):
    with pytest.raises(ValueError, match=rf"`seed` must be a non-negative.*{seed!r}"):
        data.pk_batches(_source(), 4, 3, seed=seed, epochs=1)
    with pytest.raises(ValueError, match="`seed` must be a non-negative"):
        data.pk_dataset_fn(_source(), 4, 3, seed=seed)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP"])
@pytest.mark.parametrize("damage", ["truncated", "empty", "not_an_image"])
def test_bad_image_file_error_names_the_file(tmp_path, fmt, damage):
    paths = []
    for i in range(4):
        path = tmp_path / f"img_{i}.{fmt.lower()}"
        Image.fromarray(np.full((6, 5, 3), i * 40, np.uint8)).save(path, fmt)
        paths.append(path)
    bad = paths[2]
    content = bad.read_bytes()
    bad.write_bytes(
        {
            "truncated": content[: len(content) // 2],
            "empty": b"",
            "not_an_image": b"<html>404</html>",
        }[damage]
    )
    src = data.FileSource(paths, [0, 0, 1, 1])
    with pytest.raises(tf.errors.InvalidArgumentError, match=str(bad)):
        list(data.pk_batches(src, 2, 2, seed=0, epochs=1, steps_per_epoch=3))
    with pytest.raises(tf.errors.InvalidArgumentError, match=str(bad)):
        list(data.files_dataset(paths, [0, 0, 1, 1]))


def test_complete_image_files_with_trailing_bytes_still_decode(tmp_path):
    paths = []
    for fmt in ["PNG", "JPEG"]:
        path = tmp_path / f"img.{fmt.lower()}"
        Image.fromarray(np.full((6, 5, 3), 9, np.uint8)).save(path, fmt)
        path.write_bytes(path.read_bytes() + b"\0" * 16)
        paths.append(path)
    images = [x.numpy() for x, _ in data.files_dataset(paths, [0, 1])]
    assert [x.shape for x in images] == [(6, 5, 3)] * 2
