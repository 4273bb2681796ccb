"""Cross-batch memory: the loss against batch + memory, the ring buffer, `fit`.

The layer is called with the labels and writes the queue; `XBMCircleLoss()`
holds no state. The deprecated `XBMCircleLoss(memory)` (kept for one release)
has one test that it still works and warns, and the tests of the checks only
it makes, all named `test_deprecated_*`. Two replicas:
tests/test_distribute.py::test_xbm_fit_matches_single_device.
"""

import warnings

import keras
import numpy as np
import pytest

from keras_circle import CircleLoss
from keras_circle.testing import reference
from keras_circle.xbm import CrossBatchMemory
from keras_circle.xbm import XBMCircleLoss

# Also under JAX in CI: the queue is written inside the jitted train step.
pytestmark = pytest.mark.backend_agnostic


def _reference(labels, embeddings, mem_labels, mem_embeddings, gamma, margin):
    """float64 mean over valid anchors; memory entries are references only."""
    u = reference.normalize(embeddings)
    m = reference.normalize(mem_embeddings) if len(mem_labels) else np.zeros((0, 4))
    refs = np.concatenate([u, m])
    ref_labels = np.concatenate([labels, mem_labels])
    losses = []
    for i in range(len(labels)):
        pos = [j for j in range(len(refs)) if j != i and ref_labels[j] == labels[i]]
        neg = [j for j in range(len(refs)) if ref_labels[j] != labels[i]]
        if pos and neg:
            s = refs @ u[i]
            losses.append(reference.circle_anchor(s[pos], s[neg], gamma, margin)[0])
    return float(np.mean(losses)) if losses else 0.0


def _deprecated_loss(memory, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return XBMCircleLoss(memory, **kwargs)


def _check_steps(memory, loss, forward, rng):
    """Four steps of 6 samples through a queue of 8: each value against the
    float64 reference of batch + pre-batch memory, and the queue in ring order."""
    mem_labels = np.zeros((0,), "int64")
    mem_embeddings = np.zeros((0, 4), "float32")
    for step in range(4):
        labels = rng.integers(0, 3, size=6)
        embeddings = rng.normal(size=(6, 4)).astype("float32")
        value = float(loss(labels, forward(labels, embeddings)))
        expected = _reference(
            labels, embeddings, mem_labels, mem_embeddings, 32.0, 0.25
        )
        np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6)
        # The queue keeps the 8 most recent entries (ring order).
        mem_labels = np.concatenate([mem_labels, labels])[-8:]
        mem_embeddings = np.concatenate([mem_embeddings, embeddings])[-8:]
        assert int(memory.filled.numpy()) == min(6 * (step + 1), 8)
        assert int(memory.pointer.numpy()) == 6 * (step + 1) % 8
        order = np.argsort((np.arange(8) - int(memory.pointer.numpy())) % 8)
        if step > 0:
            np.testing.assert_array_equal(memory.labels.numpy()[order], mem_labels)
            np.testing.assert_allclose(
                memory.embeddings.numpy()[order], mem_embeddings, atol=1e-7
            )


def test_correctness_and_wrap_around(rng):
    memory = CrossBatchMemory(8)

    def forward(labels, embeddings):
        rows = memory(embeddings, labels=labels, training=True)
        assert tuple(rows.shape) == (6 + 8, 4 + 2)
        return rows

    _check_steps(memory, XBMCircleLoss(gamma=32.0, margin=0.25), forward, rng)


def test_loss_sees_the_pre_batch_memory(rng):
    """A batch never meets itself through the memory: the first step is plain
    Circle loss, the second meets the first batch as it was stored."""
    memory = CrossBatchMemory(16)
    loss = XBMCircleLoss(gamma=32.0, margin=0.25)
    labels = np.array([0, 0, 1, 1, 2, 2])
    x = rng.normal(size=(6, 4)).astype("float32")
    rows = memory(x, labels=labels, training=True)
    assert int(memory.filled.numpy()) == 6  # written after being read
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(rows)[6:, -1], 0.0)
    first = float(loss(labels, rows))
    plain = float(CircleLoss(gamma=32.0, margin=0.25)(labels, x))
    np.testing.assert_allclose(first, plain, rtol=1e-6)
    second = float(loss(labels, memory(x, labels=labels, training=True)))
    expected = _reference(labels, x, labels, x, 32.0, 0.25)
    np.testing.assert_allclose(second, expected, rtol=1e-5)
    assert abs(second - first) > 1e-3


def test_labels_beyond_float32_precision_stay_distinct(rng):
    """Labels 2**30 and 2**30 + 1 are one float32 value; the ids keep them
    apart, in the batch and in the memory."""
    memory = CrossBatchMemory(8)
    loss = XBMCircleLoss(gamma=32.0, margin=0.25)
    first = 2**30 + np.array([0, 1, 0, 1, 2, 2])
    x0 = rng.normal(size=(6, 4)).astype("float32")
    memory(x0, labels=first, training=True)
    labels = 2**30 + np.array([1, 1, 0, 3, 0, 3])
    x = rng.normal(size=(6, 4)).astype("float32")
    rows = keras.ops.convert_to_numpy(memory(x, labels=labels, training=True))
    np.testing.assert_array_equal(rows[:6, -2], [0, 0, 2, 3, 2, 3])
    np.testing.assert_array_equal(rows[6:12, -2], [2, 0, 2, 0, -1, -1])
    value = float(loss(labels, rows))
    expected = _reference(labels, x, first, x0, 32.0, 0.25)
    np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6)


def test_loss_holds_no_state(rng):
    memory = CrossBatchMemory(8)
    loss = XBMCircleLoss()
    labels = np.array([0, 0, 1, 1])
    x = rng.normal(size=(4, 3)).astype("float32")
    memory(x, labels=labels, training=True)
    rows = memory(x, labels=labels, training=True)
    state = [v.numpy().copy() for v in memory.weights]
    assert loss.memory is None
    assert not [v for v in vars(loss).values() if isinstance(v, keras.Variable)]
    assert float(loss(labels, rows)) == float(loss(labels, rows))
    for before, variable in zip(state, memory.weights, strict=True):
        np.testing.assert_array_equal(variable.numpy(), before)


def test_deprecated_usage_warns_and_still_works(rng):
    """`XBMCircleLoss(memory)` with the layer called without labels: the loss
    writes the queue when the layer was called in training, else not."""
    memory = CrossBatchMemory(8)
    with pytest.warns(DeprecationWarning, match="labels=labels"):
        loss = XBMCircleLoss(memory, gamma=32.0, margin=0.25)
    x = rng.normal(size=(4, 4)).astype("float32")
    memory(x, training=False)
    loss(np.array([0, 0, 1, 1]), x)
    assert int(memory.filled.numpy()) == 0

    def forward(labels, embeddings):
        out = memory(embeddings, training=True)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(out), embeddings)
        return embeddings

    _check_steps(memory, loss, forward, rng)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        XBMCircleLoss()


def test_plain_embeddings_are_rejected_by_the_new_loss():
    with pytest.raises(ValueError, match="4 rows for 4 labels.*labels="):
        XBMCircleLoss()(np.array([0, 0, 1, 1]), np.ones((4, 3), "float32"))


def _model():
    memory = CrossBatchMemory(24, name="xbm")
    inputs, labels = keras.Input((6,)), keras.Input((), dtype="int32")
    rows = memory(keras.layers.Dense(8, name="embed")(inputs), labels=labels)
    model = keras.Model([inputs, labels], rows)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=XBMCircleLoss())
    return model, memory


def test_fit_evaluate_and_save(rng, tmp_path):
    model, memory = _model()
    y = rng.integers(0, 4, size=64)
    x = (rng.normal(size=(64, 6)) + y[:, None]).astype("float32")
    inputs = (x, y)
    history = model.fit(inputs, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    # 4 batches of 16 through a queue of 24: wrapped around twice.
    assert int(memory.filled.numpy()) == 24
    assert int(memory.pointer.numpy()) == 64 % 24
    np.testing.assert_array_equal(memory.labels.numpy()[: 64 % 24], y[48 : 48 + 16])
    model.evaluate(inputs, y, batch_size=16, verbose=0)
    assert int(memory.pointer.numpy()) == 64 % 24
    path = tmp_path / "xbm.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    xbm = restored.get_layer("xbm")
    np.testing.assert_array_equal(xbm.labels.numpy(), memory.labels.numpy())
    np.testing.assert_allclose(xbm.embeddings.numpy(), memory.embeddings.numpy())
    assert int(xbm.pointer.numpy()) == int(memory.pointer.numpy())


def test_deprecated_memory_smaller_than_the_batch_is_rejected(rng):
    memory = CrossBatchMemory(4)
    x = rng.normal(size=(6, 3)).astype("float32")
    memory(x, training=True)
    with pytest.raises(ValueError, match=r"batch \(6 samples\).*\(4 entries\)"):
        _deprecated_loss(memory)(np.array([0, 0, 1, 1, 2, 2]), x)
    assert int(keras.ops.convert_to_numpy(memory.filled)) == 0


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="static shapes elsewhere"
)
def test_memory_smaller_than_a_run_time_batch_gives_nan_under_xla(rng):
    """A batch size known only at run time cannot raise under XLA: NaN."""
    import tensorflow as tf

    memory = CrossBatchMemory(4)
    memory.build((None, 3))
    loss = XBMCircleLoss()
    step = tf.function(
        lambda y, x: loss(y, memory(x, labels=y)),
        jit_compile=True,
        input_signature=[
            tf.TensorSpec([None], tf.int64),
            tf.TensorSpec([None, 3], tf.float32),
        ],
    )
    x = rng.normal(size=(6, 3)).astype("float32")
    assert np.isnan(float(step(np.array([0, 0, 1, 1, 2, 2]), x)))
    assert np.isfinite(float(step(np.array([0, 0, 1, 1]), x[:4])))


def test_deprecated_unbuilt_memory_is_rejected():
    loss = _deprecated_loss(CrossBatchMemory(8, name="queue"))
    with pytest.raises(ValueError, match="'queue'.*not built.*Sequential"):
        loss(np.array([0, 0, 1, 1]), np.ones((4, 3), "float32"))


def test_deprecated_memory_of_the_wrong_dim_is_rejected():
    memory = CrossBatchMemory(8, name="queue")
    memory.build((None, 5))
    with pytest.raises(ValueError, match="y_pred.*3 dimensions.*'queue' holds 5"):
        _deprecated_loss(memory)(np.array([0, 0, 1, 1]), np.ones((4, 3), "float32"))
