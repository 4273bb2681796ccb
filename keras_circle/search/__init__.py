"""Nearest-neighbour search over embeddings on faiss (NumPy in and out).

This package needs only NumPy and faiss, but `import keras_circle.search`
runs `keras_circle/__init__.py`, which imports Keras (the losses register
themselves with Keras there, so that a `.keras` file naming them loads after
a plain `import keras_circle`; Keras 3 does not import a custom class's
module on its own). Keras imports its backend: under the default
TensorFlow backend that is TensorFlow; with `KERAS_BACKEND=numpy` a search
service runs without it.

`EmbeddingIndex` keeps a gallery of L2-normalised float32 embeddings with
their labels and ids, answers cosine top-k queries (exact, IVF or HNSW),
chooses an open-set distance threshold on labelled queries (`calibrate`) and
matches new queries to a label or "unknown" (`match`); it saves to a folder
whose metadata is checked when it is loaded. `neighbours` is the exact,
blockwise top-k that `keras_circle.retrieval` ranks with.

Ties: scores are faiss's float32 inner products; in `neighbours` (and so in
the retrieval metrics) the lower gallery position ranks first among equal
scores. Scores that differ only by float rounding (about 1e-7) may rank in
either order. The index's own `search` returns faiss's order.
"""

from keras_circle.search.engine import check_matrix
from keras_circle.search.engine import neighbours
from keras_circle.search.engine import normalize_rows
from keras_circle.search.engine import set_num_threads
from keras_circle.search.index import KINDS
from keras_circle.search.index import EmbeddingIndex

__all__ = [
    "KINDS",
    "EmbeddingIndex",
    "check_matrix",
    "neighbours",
    "normalize_rows",
    "set_num_threads",
]
