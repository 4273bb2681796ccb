"""Gathering the global batch across `tf.distribute` replicas (TensorFlow).

Under a `tf.distribute` strategy each replica sees only its slice of the global
batch. A pair-wise loss computed on that slice alone is a different loss (fewer
positives and negatives per anchor) and its gradient does not match the one of
the same global batch on one device. The helpers here give each replica the
embeddings and labels of the whole global batch as references:

- `ReplicaContext.all_gather` concatenates the slices in replica order and
  carries gradients (its gradient sums the upstream gradients of every replica
  and hands each replica its own slice), so the gradients that the optimizer
  sums across replicas equal the single-device gradient.
- The replica's own anchors sit at an offset in the gathered batch: the sum of
  the local batch sizes of the replicas before it, which are all-gathered too,
  so uneven last batches (even a replica with no sample) are exact.
- The mean over valid anchors divides by the global number of valid anchors
  (`global_sum`), not by the local one divided by the number of replicas.

Outside a replica context (Keras traces the loss once in the cross-replica
context while building) and under the default strategy everything is local.
On other Keras backends `in_replica_context()` is False and `num_replicas()`
is 1, without importing TensorFlow, so that the losses ask here on every
backend; the other helpers need TensorFlow.
"""

import keras


def _tensorflow():
    """`tensorflow` when Keras runs on it (the only backend with replicas here),
    else `None`, without importing it."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow

    return tensorflow


_MIRRORED = {}


def mirrored_strategy(replicas=0):
    """The process's `MirroredStrategy` over every visible GPU, else the CPUs.

    Every `MirroredStrategy` object numbers its collective operations from the
    same start, and TensorFlow's process-wide collective executor rejects a
    second object that reuses a number for another kind of operation
    ("Collective instance 100 expected type 2 ..."). A program that builds
    several models one after another (a CLI run, a test session, a notebook)
    must therefore share one strategy per device set: this returns it.

    Args:
        replicas: Use only the first `replicas` devices; `0` for all.
            Defaults to `0`.

    Returns:
        A `tf.distribute.MirroredStrategy`, the same object for the same
        devices.
    """
    import tensorflow as tf

    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices(
        "CPU"
    )
    names = tuple(d.name for d in devices)
    if replicas:
        names = names[:replicas]
    if names not in _MIRRORED:
        _MIRRORED[names] = tf.distribute.MirroredStrategy(list(names))
    return _MIRRORED[names]


def replica_context():
    """The enclosing `tf.distribute.ReplicaContext` with 2+ replicas, or `None`.

    `None` under the default strategy, with one replica, on other Keras
    backends, and in the cross-replica context (where `tf.distribute.get_replica_context()` itself
    returns `None`).
    """
    tf = _tensorflow()
    if tf is None:
        return None
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync <= 1:
        return None
    return ctx


def in_replica_context():
    """True inside `strategy.run` of a strategy with two or more replicas."""
    return replica_context() is not None


def _placed(ctx, value):
    """`value` pinned to this replica's device.

    `MultiWorkerMirroredStrategy` with one replica per worker gathers only
    tensors that carry a device string ("destinations can not be empty");
    under `MirroredStrategy` they already carry one.
    """
    import tensorflow as tf

    devices = ctx.strategy.extended.worker_devices
    if getattr(value, "device", "") or len(devices) != 1:
        return value
    with tf.device(devices[0]):
        return tf.identity(value)


def gather_references(labels, embeddings):
    """All-gathers the global batch for the anchors of this replica.

    Args:
        labels: Local integer labels, `(local_batch_size,)`.
        embeddings: Local embeddings, `(local_batch_size, dim)`.

    Returns:
        `(ref_labels, ref_embeddings, self_index)`: the labels
        `(global_batch_size,)` and embeddings `(global_batch_size, dim)` of the
        global batch in replica order, and the column of each local anchor among
        them, `(local_batch_size,)` int32. Outside a multi-replica context: the
        local tensors and `arange(local_batch_size)`, on every backend.
    """
    ctx = replica_context()
    if ctx is None:
        labels = keras.ops.convert_to_tensor(labels)
        local = keras.ops.arange(keras.ops.shape(labels)[0], dtype="int32")
        return labels, keras.ops.convert_to_tensor(embeddings), local
    import tensorflow as tf

    labels = tf.convert_to_tensor(labels)
    embeddings = tf.convert_to_tensor(embeddings)
    local_size = tf.shape(labels)[0]
    sizes = ctx.all_gather(_placed(ctx, tf.reshape(local_size, (1,))), axis=0)
    replica = tf.cast(ctx.replica_id_in_sync_group, tf.int32)
    before = tf.range(ctx.num_replicas_in_sync, dtype=tf.int32) < replica
    offset = tf.reduce_sum(tf.where(before, sizes, tf.zeros_like(sizes)))
    ref_labels = ctx.all_gather(_placed(ctx, labels), axis=0)
    ref_embeddings = ctx.all_gather(_placed(ctx, embeddings), axis=0)
    self_index = offset + tf.range(local_size, dtype=tf.int32)
    return ref_labels, ref_embeddings, self_index


def global_sum(value):
    """Sum of a float `value` over every replica (the value itself outside one).

    Used for the divisors of the mean reductions (valid-anchor counts, sums of
    sample weights), which are constants for back-propagation.
    """
    import tensorflow as tf

    value = tf.stop_gradient(tf.convert_to_tensor(value))
    ctx = replica_context()
    if ctx is None:
        return value
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, _placed(ctx, value))


def num_replicas():
    """Replicas in sync of the enclosing strategy (1 without one, and off
    TensorFlow)."""
    tf = _tensorflow()
    return 1 if tf is None else tf.distribute.get_strategy().num_replicas_in_sync
