"""Circle losses under `tf.distribute.MirroredStrategy` with two replicas.

The conftest splits the CPU into two logical devices, so `MirroredStrategy()`
runs two replicas. One `fit` step must give the weights of the same global
batch on one device: every anchor sees the whole global batch, and the mean
divides by the global number of valid anchors.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_circle
from keras_circle import distribute
from tests.mirrored import mirrored_strategy
from tests.test_metrics import reference_pair

ATOL = 1e-5


def _strategy():
    return mirrored_strategy()


def _embedder(classes=None, memory=None):
    """The embedder, with a `CosineProxies` head or a `CrossBatchMemory` of
    `memory` entries (then the labels are a second input)."""
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8, name="embed")(inputs)
    if classes:
        x = keras_circle.CosineProxies(classes, name="proxies")(x)
    if memory:
        labels = keras.Input((), dtype="int32")
        x = keras_circle.CrossBatchMemory(memory, name="xbm")(x, labels=labels)
        inputs = [inputs, labels]
    return keras.Model(inputs, x)


def _fit(weights, batches, loss, strategy=None, classes=None, memory=None):
    """Fits the global `batches` in order with plain SGD; returns the new weights."""
    scope = strategy.scope() if strategy else tf.distribute.get_strategy().scope()
    with scope:
        model = _embedder(classes, memory)
        model.set_weights(weights)
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss=loss)
    if memory:
        batches = [((x, y), y) for x, y in batches]
    dataset = tf.data.Dataset.from_tensors(batches[0])
    for batch in batches[1:]:
        dataset = dataset.concatenate(tf.data.Dataset.from_tensors(batch))
    history = model.fit(dataset, shuffle=False, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    return model.get_weights()


def _data(labels, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels, dtype="int32")
    x = (rng.normal(size=(len(labels), 6)) + 0.5 * labels[:, None]).astype("float32")
    return x, labels


def _max_diff(a, b):
    return max(float(np.max(np.abs(u - v))) for u, v in zip(a, b, strict=True))


# Global batches of one epoch, each split in two halves by MirroredStrategy.
BATCHES = [
    # P x K = 4 x 4, classes spread over both replicas.
    _data(np.tile(np.arange(4), 4), seed=0),
    # Sorted: replica 0 holds classes 0-1 only, replica 1 classes 2-3.
    _data(np.repeat(np.arange(4), 4), seed=1),
    # Uneven: class 0 only on replica 0; replica 1 has singletons whose
    # positives live on the other replica.
    _data([0, 0, 0, 0, 0, 1, 2, 3, 1, 2, 3, 4, 5, 6, 4, 5], seed=2),
    # Uneven last batches: 4 + 3 samples, then 1 + 0 (one replica empty).
    _data([0, 1, 2, 0, 1, 2, 3], seed=3),
    _data([3], seed=4),
]


def test_circle_fit_matches_single_device():
    """Five steps (16, 16, 16, 7 and 1 samples) give the single-device weights."""
    weights = _embedder().get_weights()
    single = _fit(weights, BATCHES, keras_circle.CircleLoss())
    mirrored = _fit(weights, BATCHES, keras_circle.CircleLoss(), _strategy())
    assert _max_diff(single, weights) > 1e-3  # the steps moved the weights
    assert all(np.all(np.isfinite(w)) for w in mirrored)
    assert _max_diff(single, mirrored) < ATOL


def test_local_loss_would_differ():
    """The sorted batch is a real test: replica-local pairs change the step."""
    x, y = BATCHES[1]
    weights = _embedder().get_weights()
    whole = _fit(weights, [(x, y)], keras_circle.CircleLoss())
    halves = [
        _fit(weights, [(x[i : i + 8], y[i : i + 8])], keras_circle.CircleLoss())
        for i in (0, 8)
    ]
    # Two half-batch steps averaged: what replica-local losses would give.
    local = [(a + b) / 2 for a, b in zip(*halves, strict=True)]
    assert _max_diff(whole, local) > 1e-4


def test_class_circle_fit_matches_single_device():
    batches = [(x, y % 4) for x, y in BATCHES]
    weights = _embedder(classes=4).get_weights()
    loss = keras_circle.ClassCircleLoss(gamma=64.0)
    single = _fit(weights, batches, loss, classes=4)
    mirrored = _fit(weights, batches, loss, _strategy(), classes=4)
    assert _max_diff(single, weights) > 1e-3
    assert all(np.all(np.isfinite(w)) for w in mirrored)
    assert _max_diff(single, mirrored) < ATOL


def test_xbm_fit_matches_single_device():
    """XBM on two replicas: each replica's anchors meet the global batch and the
    pre-batch memory, and the global batch is enqueued, so five steps (the last
    with one replica empty) through a queue of 24 (wrapping around) give the
    single-device weights and the same queue."""
    loss = keras_circle.XBMCircleLoss()
    weights = _embedder(memory=24).get_weights()
    single = _fit(weights, BATCHES, loss, memory=24)
    mirrored = _fit(weights, BATCHES, loss, _strategy(), memory=24)
    plain = _fit(weights[:2], BATCHES, keras_circle.CircleLoss())
    # The memory changed the steps: the trained kernels differ from CircleLoss.
    assert _max_diff(single[:2], plain) > 1e-4
    assert all(np.all(np.isfinite(w)) for w in mirrored)
    # Five steps of lr 0.5 grow the kernel to |w| ~ 5: compare relative to it.
    for a, b in zip(single[:2], mirrored[:2], strict=True):
        np.testing.assert_allclose(b, a, rtol=ATOL, atol=ATOL)
    # Queue: embeddings, labels, pointer, filled (56 samples through 24 slots).
    # The queued embeddings are x @ kernel with |x| ~ 3, hence 1e-4.
    _, _, queue, labels, pointer, filled, _ = mirrored
    assert (int(pointer), int(filled)) == (56 % 24, 24)
    np.testing.assert_array_equal(labels, single[3])
    np.testing.assert_allclose(queue, single[2], rtol=1e-4, atol=1e-4)


def test_gather_references_offsets_and_gradient():
    """Inside `strategy.run`: global references, self-pairs at the replica offset,
    and the summed per-replica losses and gradients equal the global ones."""
    strategy = _strategy()
    x, y = BATCHES[2]
    x = tf.constant(x)
    loss = keras_circle.CircleLoss()

    def global_value_and_grad():
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = loss(y, x)
        return value, tape.gradient(value, x)

    expected_value, expected_grad = global_value_and_grad()
    # Uneven local batches: 5 samples on replica 0, 11 on replica 1.
    cuts = {0: (0, 5), 1: (5, 16)}

    def step(ctx_values):
        ctx = tf.distribute.get_replica_context()
        rid = ctx.replica_id_in_sync_group
        start, stop = cuts[0] if rid == 0 else cuts[1]
        local_x, local_y = x[start:stop], y[start:stop]
        ref_labels, _, self_index = distribute.gather_references(local_y, local_x)
        with tf.GradientTape() as tape:
            tape.watch(local_x)
            value = loss(local_y, local_x)
        return value, tape.gradient(value, local_x), ref_labels, self_index

    values = strategy.experimental_distribute_values_from_function(lambda c: 0)
    value, grad, ref_labels, self_index = strategy.run(step, args=(values,))
    replicas = strategy.experimental_local_results
    assert sum(float(v) for v in replicas(value)) == pytest.approx(
        float(expected_value), rel=1e-6
    )
    np.testing.assert_array_equal(replicas(ref_labels)[1], y)
    np.testing.assert_array_equal(replicas(self_index)[0], np.arange(5))
    np.testing.assert_array_equal(replicas(self_index)[1], np.arange(5, 16))
    np.testing.assert_allclose(
        np.concatenate([g.numpy() for g in replicas(grad)]),
        expected_grad.numpy(),
        rtol=1e-6,
        atol=1e-6,
    )


def test_local_outside_replica_context():
    labels, embeddings = tf.constant([0, 0, 1]), tf.ones((3, 2))
    with _strategy().scope():
        assert not distribute.in_replica_context()
        ref_labels, _, self_index = distribute.gather_references(labels, embeddings)
    np.testing.assert_array_equal(ref_labels, labels)
    np.testing.assert_array_equal(self_index, [0, 1, 2])


def _statistics_history(weights, batches, strategy=None, classes=None):
    """One epoch over `batches` at learning rate 0: the epoch's statistics."""
    scope = strategy.scope() if strategy else tf.distribute.get_strategy().scope()
    with scope:
        model = _embedder(classes)
        model.set_weights(weights)
        if classes:
            loss = keras_circle.ClassCircleLoss(gamma=64.0)
            statistics = keras_circle.metrics.class_circle_statistics()
        else:
            loss = keras_circle.CircleLoss()
            statistics = keras_circle.metrics.circle_statistics(margin=0.4)
        model.compile(
            optimizer=keras.optimizers.SGD(0.0), loss=loss, metrics=statistics
        )
    dataset = tf.data.Dataset.from_tensors(batches[0])
    for batch in batches[1:]:
        dataset = dataset.concatenate(tf.data.Dataset.from_tensors(batch))
    history = model.fit(dataset, shuffle=False, verbose=0).history
    return {k: v[0] for k, v in history.items() if k != "loss"}, model


def test_circle_statistics_are_global_batch_values():
    """Two replicas report the statistics of the global batches, as one
    device does; each anchor's pairs span both replicas. Two batches of one
    shape (one trace): the sorted one and the one with singletons."""
    batches = BATCHES[1:3]
    weights = _embedder().get_weights()
    single, model = _statistics_history(weights, batches)
    mirrored, _ = _statistics_history(weights, batches, _strategy())
    assert set(single) == {"valid_anchors", "mean_s_p", "mean_s_n", "outside_circle"}
    for name, value in single.items():
        assert mirrored[name] == pytest.approx(value, abs=1e-6), name
    # Against the NumPy loop over the global batches (the weights stay put at
    # learning rate 0); pairs within each replica's half would differ: the
    # sorted batch has no negative on either half.
    embedded = [(y, np.asarray(model(x))) for x, y in batches]
    expected = reference_pair(embedded, 0.4)
    names = ["valid_anchors", "mean_s_p", "mean_s_n", "outside_circle"]
    np.testing.assert_allclose([mirrored[n] for n in names], expected, atol=1e-5)
    halves = [(y[i : i + 8], e[i : i + 8]) for y, e in embedded for i in (0, 8)]
    local = reference_pair(halves, 0.4)
    assert local[0] < expected[0] - 0.1


def test_class_statistics_are_global_batch_values():
    batches = [(x, y % 4) for x, y in BATCHES[2:3]]
    weights = _embedder(classes=4).get_weights()
    single, _ = _statistics_history(weights, batches, classes=4)
    mirrored, _ = _statistics_history(weights, batches, _strategy(), classes=4)
    assert set(single) == {"mean_target_cosine", "mean_hardest_negative_cosine"}
    for name, value in single.items():
        assert mirrored[name] == pytest.approx(value, abs=1e-6), name
