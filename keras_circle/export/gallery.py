"""The gallery an export searches: embeddings and ids from an index or arrays.

`serving_search` (SavedModel) and the ONNX search outputs hold the gallery
inside the artifact: L2-normalised float32 rows and their int64 ids. The
search there is exact (a matmul and a top-k), whatever kind of
`EmbeddingIndex` the gallery came from.
"""

import json
import numbers
import os

import numpy as np


def fingerprint_id(fingerprint):
    """The string an `EmbeddingIndex` records as the embedder it belongs to.

    Args:
        fingerprint: A `model_fingerprint` dict.

    Returns:
        Its canonical JSON (sorted keys, no spaces), so equal fingerprints
        give equal strings.
    """
    return json.dumps(fingerprint, sort_keys=True, separators=(",", ":"))


def gallery_arrays(gallery, embedding_size, fingerprint=None):
    """Checked `(embeddings, ids)` of a gallery for the search signatures.

    Args:
        gallery: An `EmbeddingIndex`, the folder of a saved one, or a pair
            `(embeddings, ids)`: float array `(n, embedding_size)` and
            integer ids `(n,)`, unique.
        embedding_size: The exported embedder's output size.
        fingerprint: The exported model's `model_fingerprint`. When given,
            an index built for another embedder is refused.

    Returns:
        `(embeddings, ids)`: float32 `(n, embedding_size)` with unit rows,
        int64 `(n,)`.

    Raises:
        ValueError: If the gallery is empty, has the wrong size or dtype,
            non-finite values, duplicate ids, or belongs to another embedder.
    """
    from keras_circle.search import EmbeddingIndex
    from keras_circle.search import check_matrix
    from keras_circle.search import normalize_rows

    if isinstance(gallery, (str, os.PathLike)):
        gallery = EmbeddingIndex.load(gallery)
    if isinstance(gallery, EmbeddingIndex):
        if not len(gallery):
            raise ValueError("`gallery` is an empty EmbeddingIndex.")
        if (
            fingerprint is not None
            and gallery.embedder is not None
            and gallery.embedder != fingerprint_id(fingerprint)
        ):
            raise ValueError(
                "`gallery` was built with another embedder (its `embedder` "
                "differs from this model's fingerprint): its embeddings are not "
                "comparable with this model's."
            )
        embeddings, ids = gallery.embeddings(), gallery.ids
    elif isinstance(gallery, (tuple, list)) and len(gallery) == 2:
        embeddings, ids = gallery
    else:
        raise ValueError(
            "`gallery` must be an EmbeddingIndex, the folder of a saved one, or "
            f"a pair (embeddings, ids); got {type(gallery).__name__}."
        )
    embeddings = check_matrix(embeddings, "gallery embeddings", dim=embedding_size)
    if not np.all(np.isfinite(embeddings)):
        raise ValueError("`gallery` embeddings must be finite.")
    ids = np.asarray(ids)
    if ids.shape != (embeddings.shape[0],) or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(
            f"`gallery` ids must be integers of shape ({embeddings.shape[0]},), one "
            f"per embedding; got {ids.dtype} of shape {ids.shape}."
        )
    if np.unique(ids).size != ids.size:
        raise ValueError("`gallery` ids must be unique.")
    embeddings = normalize_rows(embeddings).astype(np.float32)
    return embeddings, ids.astype(np.int64)


def check_top_k(top_k, gallery_size):
    """`min(top_k, gallery_size)` after checking `top_k` is a positive int."""
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1:
        raise ValueError(f"`top_k` must be a positive int; got {top_k!r}.")
    return int(min(top_k, gallery_size))
