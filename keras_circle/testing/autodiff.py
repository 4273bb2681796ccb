"""The pair-wise loss by autodiff, to test the fused kernel's backward against.

`keras_circle.kernels.block_forward` is differentiable as written: autodiff of
its losses over one block holding every anchor is the plain formulation of
`softplus(LSE_p + LSE_n)`, with the `(batch, num_refs)` intermediates that the
hand-written backward avoids. Slow and memory-hungry: for tests only.
"""

from keras import ops

from keras_circle import kernels
from keras_circle import similarity

_REFERENCES = ("ref_labels", "ref_embeddings", "self_index", "ref_valid")


def pair_softplus_autodiff(labels, embeddings, logits, **references):
    """`keras_circle.losses.pairwise.pair_softplus_loss`, gradient by autodiff.

    The same arguments (`ref_labels`, `ref_embeddings`, `self_index`,
    `ref_valid` by keyword) and the same result.
    """
    unknown = sorted(set(references) - set(_REFERENCES))
    if unknown:
        raise TypeError(f"Unknown arguments {unknown}; expected {_REFERENCES}.")
    ref_labels, ref_embeddings, self_index, ref_valid = (
        references.get(name) for name in _REFERENCES
    )
    labels = ops.convert_to_tensor(labels)
    embeddings = similarity.l2_normalize(ops.cast(embeddings, "float32"))
    if ref_embeddings is None:
        ref_labels, ref_embeddings = labels, embeddings
        self_index = ops.arange(ops.shape(labels)[0], dtype="int32")
    else:
        ref_labels = ops.convert_to_tensor(ref_labels)
        ref_embeddings = similarity.l2_normalize(ops.cast(ref_embeddings, "float32"))
    losses, valid, _ = kernels.block_forward(
        embeddings, ref_embeddings, labels, ref_labels, self_index, logits, ref_valid
    )
    return losses, valid
