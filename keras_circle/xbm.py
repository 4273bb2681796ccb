"""Cross-batch memory (XBM): recent embeddings as extra references of Circle loss.

The design keeps "losses hold no state; layers hold weights":

- `CrossBatchMemory` (in `keras_circle.cross_batch_memory`, also importable
  from here) is a layer placed after the embedder and called with the labels.
  It owns the queue; its output is the batch and the memory as it was before
  this batch, with every label replaced by a small id exact in float32 (that
  module's docstring says how); when training it then enqueues the batch.
- `XBMCircleLoss()`, here, reads that output: a `CircleLoss` with extra
  references, without state of its own.

`XBMCircleLoss(memory)`, the earlier usage in which the loss wrote the queue
through a flag that the layer armed, still works for one release with a
`DeprecationWarning`.
"""

import warnings

import keras
from keras import ops

from keras_circle import _checks
from keras_circle import distribute
from keras_circle.cross_batch_memory import EXTRA_COLUMNS
from keras_circle.cross_batch_memory import CrossBatchMemory
from keras_circle.cross_batch_memory import label_dtype
from keras_circle.losses.pairwise import CircleLoss
from keras_circle.losses.pairwise import CirclePairLogits
from keras_circle.losses.pairwise import checked_embeddings
from keras_circle.losses.pairwise import pair_softplus_loss

__all__ = ["CrossBatchMemory", "XBMCircleLoss"]


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
        labels = ops.cast(labels, label_dtype())
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
