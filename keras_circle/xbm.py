"""Cross-batch memory (XBM): recent embeddings as extra references of Circle loss.

The design keeps "losses hold no state; layers hold weights":

- `CrossBatchMemory` is a layer placed after the embedder and called with the
  labels (a second model input, as `CosineProxies` takes them). It owns the
  queue as non-trainable variables (embeddings, labels, a write pointer, a
  filled count), so the memory is saved and restored with the model's weights
  and checkpoints. Its output hands the batch and the memory *as it was before
  this batch* on to the loss; then, when training, it appends the batch
  (stop-gradient copies) to the queue. No batch meets itself in the memory.
- `XBMCircleLoss()` reads that output: a `CircleLoss` with extra references,
  without state of its own.

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

`XBMCircleLoss(memory)`, the earlier usage in which the loss wrote the queue
through a flag that the layer armed, still works for one release with a
`DeprecationWarning`.
"""

import warnings

import keras
from keras import ops

from keras_circle import _checks
from keras_circle import distribute
from keras_circle.losses.pairwise import CircleLoss
from keras_circle.losses.pairwise import CirclePairLogits
from keras_circle.losses.pairwise import checked_embeddings
from keras_circle.losses.pairwise import pair_softplus_loss

# Columns after the embedding in the output of `CrossBatchMemory(labels=...)`.
EXTRA_COLUMNS = 2


def _label_dtype():
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
    exact in float32, equal exactly where the labels are (see the module
    docstring). Then, when `training` is true, the batch is appended to the
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
            dtype=_label_dtype(), name="labels",
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


@keras.saving.register_keras_serializable(package="keras_circle")
class XBMCircleLoss(CircleLoss):
    """Circle loss of the batch against the batch and a cross-batch memory.

    Reads the output of `CrossBatchMemory` called with the labels: the batch
    rows and the memory as it was before this batch. Each anchor of the batch
    is compared with the other samples of the batch (as in `CircleLoss`; the
    self-pair is never a pair) and with every filled entry of the memory,
    which are references only: never anchors and without gradient. The
    reduction is the mean over anchors with at least one positive and one
    negative among all references. The loss holds no state: the layer writes
    the queue.

    Under a `tf.distribute` strategy each replica's anchors are compared with
    the whole global batch (as `CircleLoss` does) and the memory: a step on N
    replicas equals the same global batch on one device.

    Args:
        memory: Deprecated; `None`. A `CrossBatchMemory` layer here selects
            the earlier usage (the layer called without labels returns the
            embeddings, and the loss writes the queue), which warns and goes
            away in the next release.
        gamma: Scale factor. Defaults to `80.0`.
        margin: Relaxation margin. Defaults to `0.4`.
        **kwargs: Other `CircleLoss` arguments. `name` defaults to
            `"xbm_circle_loss"`.

    Reference:
        Wang et al., "Cross-Batch Memory for Embedding Learning", CVPR 2020;
        Sun et al., "Circle Loss", CVPR 2020.
    """

    def __init__(self, memory=None, gamma=80.0, margin=0.4, **kwargs):
        kwargs.setdefault("name", "xbm_circle_loss")
        super().__init__(gamma=gamma, margin=margin, **kwargs)
        if memory is not None:
            if not isinstance(memory, CrossBatchMemory):
                raise TypeError(
                    "`memory` is deprecated and must be `None` or a "
                    f"`CrossBatchMemory`; received {type(memory).__name__}."
                )
            warnings.warn(
                "`XBMCircleLoss(memory)` is deprecated: call the memory with "
                "the labels, `memory(embeddings, labels=labels)`, and compile "
                "with `XBMCircleLoss()`.",
                DeprecationWarning,
                stacklevel=2,
            )
        self.memory = memory

    def _logits(self):
        return CirclePairLogits(self.gamma, self.margin, self.stop_alpha_gradient)

    def per_sample(self, labels, y_pred):
        if self.memory is not None:
            return self._deprecated_per_sample(labels, y_pred)
        y_pred, finite = _checks.float_matrix(
            y_pred, "y_pred", "(batch_size + memory size, dim + 2)"
        )
        _checks.nonempty_batch(labels, labels, "y_pred", "y_true")
        count = ops.shape(labels)[0]
        factor = _checks.combine(finite, self._check_layout(labels, y_pred))
        y_pred = _checks.poison(y_pred, factor)
        batch, memory = y_pred[:count], y_pred[count:]
        embeddings = batch[:, :-EXTRA_COLUMNS]
        ids = ops.cast(batch[:, -2], "int32")
        ref_ids, ref_embeddings, self_index = distribute.gather_references(
            ids, embeddings
        )
        memory = ops.stop_gradient(memory)
        losses, valid = pair_softplus_loss(
            ids,
            embeddings,
            self._logits(),
            ops.concatenate([ref_ids, ops.cast(memory[:, -2], "int32")], axis=0),
            ops.concatenate([ref_embeddings, memory[:, :-EXTRA_COLUMNS]], axis=0),
            self_index,
            ops.concatenate(
                [ops.ones_like(ref_ids, dtype="bool"), memory[:, -1] > 0.5], axis=0
            ),
        )
        return _checks.poison(losses, factor), valid

    def _check_layout(self, labels, y_pred):
        """`y_pred` must be the rows of `CrossBatchMemory(labels=...)`: more
        rows than labels, at least one embedding column."""
        hint = (
            "`XBMCircleLoss()` reads the output of `CrossBatchMemory` called "
            "with the labels, `(batch_size + size, dim + 2)` rows; "
        )
        width = y_pred.shape[-1]
        if width is not None and width <= EXTRA_COLUMNS:
            raise ValueError(hint + f"`y_pred` has only {width} columns.")
        n_labels, n_rows = _checks.static_dim(labels, 0), _checks.static_dim(y_pred, 0)
        if n_labels is not None and n_rows is not None:
            if n_rows <= n_labels:
                raise ValueError(
                    hint + f"`y_pred` has {n_rows} rows for {n_labels} labels "
                    "(plain embeddings? call the memory layer with `labels=`)."
                )
            return None
        return _checks.check_value(
            ops.greater(ops.shape(y_pred)[0], ops.shape(labels)[0]),
            hint + "`y_pred` has no more rows than `y_true`.",
            [labels, y_pred],
        )

    def _deprecated_per_sample(self, labels, y_pred):
        embeddings, factor = checked_embeddings(labels, y_pred)
        self._check_memory(embeddings)
        labels = ops.cast(labels, _label_dtype())
        # This replica's anchors against the global batch (the batch itself
        # outside a multi-replica context), as `CircleLoss` does.
        batch_labels, batch_embeddings, self_index = distribute.gather_references(
            labels, embeddings
        )
        factor = _checks.combine(factor, self.memory.check_batch_fits(batch_labels))
        mem_labels, mem_embeddings, filled = self.memory.references()
        losses, valid = pair_softplus_loss(
            labels,
            embeddings,
            self._logits(),
            ops.concatenate([batch_labels, mem_labels], axis=0),
            ops.concatenate([batch_embeddings, mem_embeddings], axis=0),
            self_index,
            ops.concatenate(
                [ops.ones_like(batch_labels, dtype="bool"), filled], axis=0
            ),
        )
        self.memory.enqueue(batch_labels, batch_embeddings)
        return _checks.poison(losses, factor), valid

    def _check_memory(self, embeddings):
        """The memory layer must be built, for embeddings of this size."""
        memory = self.memory
        if not memory.built:
            raise ValueError(
                f"The `CrossBatchMemory` layer {memory.name!r} given to "
                "`XBMCircleLoss` is not built: place it in the model after the "
                "embedder (e.g. `keras.Sequential([embedder, memory])`) so that "
                "it is called on the embeddings, or call `memory.build(shape)`."
            )
        dim, mem_dim = embeddings.shape[-1], memory.embeddings.shape[-1]
        if dim is not None and dim != mem_dim:
            raise ValueError(
                f"`y_pred` has {dim} dimensions per embedding but the "
                f"`CrossBatchMemory` layer {memory.name!r} holds {mem_dim}."
            )
