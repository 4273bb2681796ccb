"""TFDS offline for the fine-grained and LFW loader tests (`tfds.testing.mock_data`).

TFDS's default mock draws bounding boxes with min > max, which its own
encoder rejects once images are read encoded (`SkipDecoding`), so the mock
here builds valid examples from each builder's feature spec, encodes and
serialises them with the builder's own features, and decodes them with the
caller's decoders, as a prepared data set would.
"""

import numpy as np
import pytest
import tensorflow as tf

NUM_EXAMPLES = 40


def _value(tfds, feature, i, rng):
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


@pytest.fixture
def mock_tfds():
    """Every `tfds.load` serves `NUM_EXAMPLES` examples; yields the splits asked for."""
    tfds = pytest.importorskip("tensorflow_datasets")
    requested_splits = []

    def as_dataset(self, split=None, decoders=None, **kwargs):
        requested_splits.append(str(split))
        features = self.info.features
        rng = np.random.default_rng(0)
        serialized = [
            features.serialize_example(
                {key: _value(tfds, f, i, rng) for key, f in features.items()}
            )
            for i in range(NUM_EXAMPLES)
        ]
        ds = tf.data.Dataset.from_tensor_slices(serialized)
        return ds.map(lambda s: features.deserialize_example(s, decoders=decoders))

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        yield requested_splits
