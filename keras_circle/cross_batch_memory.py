"""`CrossBatchMemory`: the queue of cross-batch memory (XBM), a layer.

Placed after the embedder and called with the labels (a second model input,
as `CosineProxies` takes them), the layer owns the queue as non-trainable
variables (embeddings, labels, a write pointer, a filled count), so the memory
is saved and restored with the model's weights and checkpoints. Its output
hands the batch and the memory *as it was before this batch* on to
`keras_circle.xbm.XBMCircleLoss`; then, when training, it appends the batch
(stop-gradient copies) to the queue. No batch meets itself in the memory.

In `fit` only the loss sees `y_true`, and it sees the memory only through
`y_pred`, which is float32. Integer labels (up to 64 bits) do not ride exactly
in float32, so the layer replaces every label by a small id that does: the
index of the first sample of the (global) batch with that label, or -1 for a
memory label absent from the batch. Two entries have equal ids exactly where
they have equal labels or neither label is in the batch; an anchor's id is
never -1, so the positives and negatives of every anchor are those of the
labels themselves.

Under a `tf.distribute` strategy the layer gathers the global batch (the same
on every replica): the ids refer to it, and every replica enqueues it, so every
replica's copy of the queue holds the same entries as one device would.
"""

import keras
from keras import ops

from keras_circle import _checks
from keras_circle import distribute

# Columns after the embedding in the output of `CrossBatchMemory(labels=...)`.
EXTRA_COLUMNS = 2


def label_dtype():
    """int64, or int32 where the backend has no 64-bit ints (JAX without x64)."""
    return keras.backend.standardize_dtype(ops.cast(0, "int64").dtype)


def first_occurrence(queries, keys):
    """For each query label, the index of the first equal key, or -1 (int32)."""
    count = ops.shape(keys)[0]
    index = ops.arange(count, dtype="int32")
    equal = ops.equal(ops.expand_dims(queries, 1), ops.expand_dims(keys, 0))
    # A min over the matching indices: argmax's choice among ties is not
    # specified on every backend.
    first = ops.min(ops.where(equal, index[None, :], count), axis=1)
    return ops.where(ops.any(equal, axis=1), first, -1)


@keras.saving.register_keras_serializable(package="keras_circle")
class CrossBatchMemory(keras.layers.Layer):
    """A queue of the most recent `size` embeddings and labels.

    Called with the labels, `memory(embeddings, labels=labels)` returns the
    rows `XBMCircleLoss()` reads, float32 `(batch_size + size, dim + 2)`:

    - first the batch, `[embedding | id | 1]`, with gradient;
    - then every memory slot as it was before this batch,
      `[embedding | id | filled]`, without gradient (`filled` is 0 for a slot
      not written yet).

    `id` is the index of the first sample of the (global) batch with the
    row's label, -1 for a memory label absent from the batch: small integers,
    exact in float32, equal exactly where the labels are (see the docstring
    of `keras_circle.cross_batch_memory`). Then, when `training` is true, the batch is appended to the
    queue (a ring buffer: the oldest entries are overwritten first). Entries
    are float32 stop-gradient copies; `evaluate` and `predict` never write.

    Under a `tf.distribute` strategy the ids refer to the gathered global
    batch and every replica writes it; the variables take the first replica's
    value (`aggregation="only_first_replica"`).

    Called without labels the layer returns its input unchanged (the
    deprecated usage `XBMCircleLoss(memory)`, in which the loss writes the
    queue).

    Args:
        size: Number of entries, a positive int (numpy integers too). Must be
            at least the global batch size (a larger batch is a `ValueError`
            where the sizes are known, else NaN rows and a NaN loss).
        **kwargs: Standard layer arguments.

    Example:

    ```python
    images, labels = keras.Input((64, 64, 3)), keras.Input((), dtype="int32")
    rows = keras_circle.CrossBatchMemory(1024)(embedder(images), labels=labels)
    trainer = keras.Model([images, labels], rows)
    trainer.compile("adam", loss=keras_circle.XBMCircleLoss())
    trainer.fit((x, y), y, batch_size=64)
    ```

    Reference:
        Wang et al., "Cross-Batch Memory for Embedding Learning", CVPR 2020.
    """

    def __init__(self, size, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.size = _checks.check_count(size, "size")

    def build(self, input_shape):
        dim = input_shape[-1]
        if dim is None:
            raise ValueError("`CrossBatchMemory` needs a known embedding size.")

        def weight(**kwargs):
            # Replicas write identical values (the gathered global batch).
            return self.add_weight(aggregation="only_first_replica", **kwargs)

        self.embeddings = weight(
            shape=(self.size, dim), initializer="zeros", trainable=False,
            dtype="float32", name="embeddings",
        )  # fmt: skip
        self.labels = weight(
            shape=(self.size,), initializer="zeros", trainable=False,
            dtype=label_dtype(), name="labels",
        )  # fmt: skip
        self.pointer = weight(
            shape=(), initializer="zeros", trainable=False, dtype="int32",
            name="pointer",
        )  # fmt: skip
        self.filled = weight(
            shape=(), initializer="zeros", trainable=False, dtype="int32",
            name="filled",
        )  # fmt: skip
        # Used only by the deprecated `XBMCircleLoss(memory)`; kept so that
        # the weights of every saved model load (the variable count matters).
        self.armed = weight(
            shape=(), initializer="zeros", trainable=False, dtype="int32",
            name="armed",
        )  # fmt: skip

    def call(self, inputs, labels=None, training=None):
        if labels is None:
            self.armed.assign(ops.cast(1 if training else 0, "int32"))
            return inputs
        embeddings = ops.cast(inputs, "float32")
        if hasattr(labels, "shape") and len(labels.shape) == 0:
            raise ValueError(
                "`labels` must hold one label per embedding, shape "
                "(batch_size,); received a scalar."
            )
        labels, whole = _checks.integer_labels(labels, "labels")
        factor = _checks.combine(
            whole, _checks.same_batch(labels, embeddings, "labels", "inputs")
        )
        labels = ops.cast(labels, self.labels.dtype)
        batch_labels, batch_embeddings, self_index = distribute.gather_references(
            labels, embeddings
        )
        # The global batch: one replica's share may be empty, the whole not.
        _checks.nonempty_batch(batch_labels, batch_labels, "inputs", "labels")
        factor = _checks.combine(factor, self.check_batch_fits(batch_labels))
        # Read before the write below: the loss sees the pre-batch memory.
        mem_labels, mem_embeddings, filled = self.references()
        batch_ids = ops.take(
            first_occurrence(batch_labels, batch_labels), self_index, axis=0
        )
        mem_ids = first_occurrence(mem_labels, batch_labels)
        rows = ops.concatenate(
            [
                ops.concatenate(
                    [
                        embeddings,
                        ops.cast(batch_ids, "float32")[:, None],
                        ops.ones_like(embeddings[:, :1]),
                    ],
                    axis=1,
                ),
                ops.concatenate(
                    [
                        mem_embeddings,
                        ops.cast(mem_ids, "float32")[:, None],
                        ops.cast(filled, "float32")[:, None],
                    ],
                    axis=1,
                ),
            ],
            axis=0,
        )
        if training:
            self._write(batch_labels, batch_embeddings)
        return _checks.poison(rows, factor)

    def compute_output_shape(self, input_shape, labels_shape=None):
        if labels_shape is None:
            return input_shape
        batch, dim = input_shape[0], input_shape[-1]
        rows = None if batch is None else batch + self.size
        return (rows, None if dim is None else dim + EXTRA_COLUMNS)

    def compute_output_spec(self, inputs, labels=None, training=None):
        if labels is None:
            return keras.KerasTensor(inputs.shape, inputs.dtype)
        shape = self.compute_output_shape(inputs.shape, labels.shape)
        return keras.KerasTensor(shape, "float32")

    def references(self):
        """`(labels, embeddings, filled)` of every slot.

        `filled` is a bool `(size,)` marking the slots written so far; the
        shapes are static (the whole queue) so that the loss compiles under
        XLA and `jax.jit`.
        """
        filled = ops.arange(self.size, dtype="int32") < ops.convert_to_tensor(
            self.filled
        )
        labels = ops.convert_to_tensor(self.labels)
        embeddings = ops.stop_gradient(ops.convert_to_tensor(self.embeddings))
        return labels, embeddings, filled

    def check_batch_fits(self, batch_labels):
        """The (global) batch must fit in the memory: a larger one would write
        two entries to one slot in a single step.

        Returns the poison factor of a run-time check, or `None`.
        """
        count = _checks.static_dim(batch_labels, 0)
        gathered = (
            ", gathered over the replicas" if distribute.in_replica_context() else ""
        )
        message = (
            "The batch ({} samples" + gathered + ") is larger than the "
            f"`CrossBatchMemory` ({self.size} entries); its `size` must be at "
            "least the global batch size."
        )
        if count is not None:
            if count > self.size:
                raise ValueError(message.format(count))
            return None
        return _checks.check_value(
            ops.less_equal(ops.shape(batch_labels)[0], self.size),
            message.format(f"more than {self.size}"),
            [batch_labels],
        )

    def _write(self, labels, embeddings, armed=None):
        """Writes a batch at the pointer (wrapping around); with `armed` (a
        bool tensor) only where it is true."""
        embeddings = ops.stop_gradient(ops.cast(embeddings, "float32"))
        labels = ops.cast(labels, self.labels.dtype)
        count = ops.shape(labels)[0]
        pointer = ops.convert_to_tensor(self.pointer)
        slots = ops.mod(pointer + ops.arange(count, dtype="int32"), self.size)
        slots = ops.expand_dims(slots, 1)

        def pick(new, old):
            return new if armed is None else ops.where(armed, new, old)

        for variable, values in ((self.embeddings, embeddings), (self.labels, labels)):
            old = ops.convert_to_tensor(variable)
            variable.assign(pick(ops.scatter_update(old, slots, values), old))
        count = ops.cast(count, "int32")
        self.pointer.assign(pick(ops.mod(pointer + count, self.size), pointer))
        filled = ops.convert_to_tensor(self.filled)
        self.filled.assign(pick(ops.minimum(filled + count, self.size), filled))

    def enqueue(self, labels, embeddings):
        """Deprecated path: writes a batch if the layer is armed, then disarms."""
        armed = ops.greater(ops.convert_to_tensor(self.armed), 0)
        self._write(labels, embeddings, armed)
        # One enqueue per training forward pass.
        self.armed.assign(ops.zeros((), "int32"))

    def get_config(self):
        config = super().get_config()
        config["size"] = self.size
        return config
