"""The `CrossBatchMemory` layer: the queue it writes and the inputs it refuses.

What the loss makes of its output: test_xbm.py.
"""

import keras
import numpy as np
import pytest

from keras_circle import CrossBatchMemory

pytestmark = pytest.mark.backend_agnostic


def test_not_training_does_not_enqueue(rng):
    memory = CrossBatchMemory(8)
    x = rng.normal(size=(4, 3)).astype("float32")
    labels = np.array([0, 0, 1, 1])
    memory(x, labels=labels, training=False)
    memory(x, labels=labels)
    assert int(memory.filled.numpy()) == 0
    memory(x, labels=labels, training=True)
    assert int(memory.filled.numpy()) == 4


def test_empty_batch_is_rejected():
    """Not an error from deep inside the backend's reductions."""
    memory = CrossBatchMemory(8)
    with pytest.raises(ValueError, match="`inputs` and `labels` hold an empty batch"):
        memory(np.zeros((0, 3), "float32"), labels=np.zeros((0,), "int32"))


def test_memory_smaller_than_the_batch_is_rejected(rng):
    """Two entries of one step would be written to one slot."""
    memory = CrossBatchMemory(4)
    x = rng.normal(size=(6, 3)).astype("float32")
    with pytest.raises(ValueError, match=r"batch \(6 samples\).*\(4 entries\)"):
        memory(x, labels=np.array([0, 0, 1, 1, 2, 2]), training=True)
    assert int(keras.ops.convert_to_numpy(memory.filled)) == 0


def test_numpy_integer_size_is_accepted():
    memory = CrossBatchMemory(np.int64(8))
    assert memory.size == 8 and type(memory.size) is int
    assert memory.get_config()["size"] == 8
    for bad in (True, 8.0, np.float32(8)):
        with pytest.raises(TypeError, match="size"):
            CrossBatchMemory(bad)
    with pytest.raises(ValueError, match="size"):
        CrossBatchMemory(np.int32(0))
