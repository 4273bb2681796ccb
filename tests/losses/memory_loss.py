"""Cross-batch memory in the form the loss-wide tests call: `loss(labels, x)`.

`MemoryThenLoss` runs the stateless XBM path: `CrossBatchMemory` called with
the labels hands the batch and its memory on, `XBMCircleLoss()` reads them.
The memory holds `size // 2` earlier entries whose labels no batch uses (so
they are negatives of every anchor, and a batch without a valid anchor still
gives 0); it is read, never written (`training=False`), so repeated calls,
eager or compiled, see the same memory.
"""

import numpy as np

import keras_circle


class MemoryThenLoss:
    def __init__(self, dim, size=16, **loss_kwargs):
        self.memory = keras_circle.CrossBatchMemory(size)
        rng = np.random.default_rng(0)
        earlier = rng.normal(size=(size // 2, dim)).astype("float32")
        self.memory(earlier, labels=10_000 + np.arange(size // 2), training=True)
        self.loss = keras_circle.XBMCircleLoss(**loss_kwargs)

    def __call__(self, y_true, y_pred, sample_weight=None):
        rows = self.memory(y_pred, labels=y_true, training=False)
        return self.loss(y_true, rows, sample_weight=sample_weight)
