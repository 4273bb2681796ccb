"""Retrieval, re-identification, verification and clustering metrics (NumPy, faiss).

Every metric ranks by cosine similarity of L2-normalised float32 embeddings
and bounds its memory: Recall@K, Precision@1, MAP@R and R-precision search
with `keras_circle.search` (faiss, exact) a block of queries at a time;
re-ID scores the full gallery blockwise in NumPy and counts each match's
position (no sort), optionally after k-reciprocal re-ranking
(`k_reciprocal_rerank`); verification scores pairs.
Ties: among equal similarities the lower reference index ranks first. NumPy
and faiss only, so it runs whatever the Keras backend.
"""

from keras_circle.retrieval import checks
from keras_circle.retrieval.clustering import clustering_scores
from keras_circle.retrieval.ranking import map_at_r
from keras_circle.retrieval.ranking import precision_at_1
from keras_circle.retrieval.ranking import r_precision
from keras_circle.retrieval.ranking import recall_at_k
from keras_circle.retrieval.reid import reid_metrics
from keras_circle.retrieval.rerank import k_reciprocal_rerank
from keras_circle.retrieval.verification import verification_metrics

__all__ = [
    "checks",
    "clustering_scores",
    "k_reciprocal_rerank",
    "map_at_r",
    "precision_at_1",
    "r_precision",
    "recall_at_k",
    "reid_metrics",
    "verification_metrics",
]
