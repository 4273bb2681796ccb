"""Cross-batch memory (XBM): recent embeddings as extra references of Circle loss.

The design keeps "losses hold no state; layers hold weights":

- `CrossBatchMemory` is a layer placed after the embedder. It returns its
  input unchanged and owns the queue as non-trainable variables (embeddings,
  labels, a write pointer, a filled count), so the memory is saved and restored
  with the model's weights and checkpoints.
- `XBMCircleLoss` is given the layer. In `fit` only the loss sees the labels,
  so the loss reads the memory and then hands the batch (stop-gradient copies)
  to `CrossBatchMemory.enqueue`. Under a `tf.distribute` strategy that batch is
  the gathered global batch, the same on every replica, so every replica's
  copy of the queue holds the same entries as one device would. The layer
  arms the enqueue when called with `training=True` and disarms it otherwise,
  so `evaluate` never writes validation embeddings into the queue.
"""

import keras
from keras import ops

from keras_circle import _checks
from keras_circle import distribute
from keras_circle.losses.pairwise import CircleLoss
from keras_circle.losses.pairwise import CirclePairLogits
from keras_circle.losses.pairwise import checked_embeddings
from keras_circle.losses.pairwise import pair_softplus_loss


def _label_dtype():
    """int64, or int32 where the backend has no 64-bit ints (JAX without x64)."""
    return keras.backend.standardize_dtype(ops.cast(0, "int64").dtype)


@keras.saving.register_keras_serializable(package="keras_circle")
class CrossBatchMemory(keras.layers.Layer):
    """A queue of the most recent `size` embeddings and labels (identity layer).

    Returns its input unchanged. `XBMCircleLoss` reads the queue as extra
    references and appends each training batch to it; the oldest entries are
    overwritten first (a ring buffer). Entries are float32 stop-gradient copies.

    Under a `tf.distribute` strategy the queue is mirrored: every replica writes
    the same gathered global batch, and the variables take the first replica's
    value (`aggregation="only_first_replica"`).

    Args:
        size: Number of entries, a positive int (numpy integers too). Must be
            at least the global batch size: `XBMCircleLoss` rejects a larger
            batch (a `ValueError` where the sizes are known, else a NaN loss).
        **kwargs: Standard layer arguments.

    Example:

    ```python
    memory = keras_circle.xbm.CrossBatchMemory(1024)
    model = keras.Sequential([embedder, memory])
    model.compile("adam", loss=keras_circle.xbm.XBMCircleLoss(memory))
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
        self.armed = weight(
            shape=(), initializer="zeros", trainable=False, dtype="int32",
            name="armed",
        )  # fmt: skip

    def call(self, inputs, training=None):
        self.armed.assign(ops.cast(1 if training else 0, "int32"))
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

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

    def enqueue(self, labels, embeddings):
        """Writes a batch at the pointer (wrapping around) if the layer is armed."""
        embeddings = ops.stop_gradient(ops.cast(embeddings, "float32"))
        labels = ops.cast(labels, self.labels.dtype)
        count = ops.shape(labels)[0]
        armed = ops.greater(ops.convert_to_tensor(self.armed), 0)
        pointer = ops.convert_to_tensor(self.pointer)
        slots = ops.mod(pointer + ops.arange(count, dtype="int32"), self.size)
        slots = ops.expand_dims(slots, 1)
        for variable, values in ((self.embeddings, embeddings), (self.labels, labels)):
            old = ops.convert_to_tensor(variable)
            variable.assign(
                ops.where(armed, ops.scatter_update(old, slots, values), old)
            )
        count = ops.cast(count, "int32")
        self.pointer.assign(
            ops.where(armed, ops.mod(pointer + count, self.size), pointer)
        )
        filled = ops.convert_to_tensor(self.filled)
        self.filled.assign(
            ops.where(armed, ops.minimum(filled + count, self.size), filled)
        )
        # One enqueue per training forward pass.
        self.armed.assign(ops.zeros((), "int32"))

    def get_config(self):
        config = super().get_config()
        config["size"] = self.size
        return config


@keras.saving.register_keras_serializable(package="keras_circle")
class XBMCircleLoss(CircleLoss):
    """Circle loss of the batch against the batch and a cross-batch memory.

    Each anchor of the batch is compared with the other samples of the batch
    (as in `CircleLoss`; the self-pair is never a pair) and with every filled
    entry of `memory`, which are references only: never anchors and without
    gradient. The reduction is the mean over anchors with at least one positive
    and one negative among all references. After computing the loss, the batch
    is appended to the memory when the memory layer was called with
    `training=True` in the same step.

    The memory is not part of the loss config: a loss restored from a saved
    model has `memory=None` and acts as `CircleLoss`; pass the restored model's
    layer again to keep using the memory.

    Under a `tf.distribute` strategy each replica's anchors are compared with
    the whole global batch (as `CircleLoss` does) and the memory, and the
    global batch is enqueued: a step on N replicas equals the same global
    batch on one device.

    Args:
        memory: A `CrossBatchMemory` layer of the model, or `None`.
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
        self.memory = memory

    def per_sample(self, labels, y_pred):
        if self.memory is None:
            return super().per_sample(labels, y_pred)
        embeddings, factor = checked_embeddings(labels, y_pred)
        self._check_memory(embeddings)
        labels = ops.cast(labels, _label_dtype())
        distributed = distribute.in_replica_context()
        # This replica's anchors against the global batch (the batch itself
        # outside a multi-replica context), as `CircleLoss` does.
        batch_labels, batch_embeddings, self_index = distribute.gather_references(
            labels, embeddings
        )
        factor = _checks.combine(
            factor, self._check_batch_fits(batch_labels, distributed)
        )
        mem_labels, mem_embeddings, filled = self.memory.references()
        ref_labels = ops.concatenate([batch_labels, mem_labels], axis=0)
        ref_embeddings = ops.concatenate([batch_embeddings, mem_embeddings], axis=0)
        ref_valid = ops.concatenate(
            [ops.ones_like(batch_labels, dtype="bool"), filled], axis=0
        )

        losses, valid = pair_softplus_loss(
            labels,
            embeddings,
            CirclePairLogits(self.gamma, self.margin, self.stop_alpha_gradient),
            ref_labels,
            ref_embeddings,
            self_index,
            ref_valid,
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

    def _check_batch_fits(self, batch_labels, distributed):
        """The (global) batch must fit in the memory: a larger one would write
        two entries to one slot in a single step."""
        size = self.memory.size
        count = _checks.static_dim(batch_labels, 0)
        gathered = ", gathered over the replicas" if distributed else ""
        message = (
            "The batch ({} samples" + gathered + ") is larger than the "
            f"`CrossBatchMemory` ({size} entries); its `size` must be at least "
            "the global batch size."
        )
        if count is not None:
            if count > size:
                raise ValueError(message.format(count))
            return None
        return _checks.check_value(
            ops.less_equal(ops.shape(batch_labels)[0], size),
            message.format(f"more than {size}"),
            [batch_labels],
        )
