"""NMI and AMI of a k-means clustering of the embeddings (faiss k-means, scikit-learn scores)."""

import faiss
import numpy as np

from keras_circle.retrieval.checks import check_embeddings
from keras_circle.retrieval.checks import check_labels
from keras_circle.search.engine import ensure_threads


def clustering_scores(
    embeddings, labels, *, num_clusters=None, seed=0, niter=20, nredo=5
):
    """NMI and AMI between the labels and a k-means clustering of the embeddings.

    The L2-normalised embeddings are clustered by faiss's spherical k-means
    (cosine, like the other metrics) into as many clusters as there are
    classes; each sample takes its nearest centroid, and scikit-learn's
    `normalized_mutual_info_score` and `adjusted_mutual_info_score` compare
    that partition with the labels (pytorch-metric-learning's NMI and AMI).
    Needs scikit-learn: `pip install keras-circle[clustering]`.

    Args:
        embeddings: array `(num_samples, dim)`.
        labels: integer labels `(num_samples,)`.
        num_clusters: clusters. Defaults to `None`: the number of classes.
        seed: k-means seed. Defaults to `0`.
        niter: k-means iterations. Defaults to `20`.
        nredo: k-means runs from different seeds; the one with the best
            objective is kept (one run can merge two classes). Defaults to `5`.

    Returns:
        Dict `{"NMI": float, "AMI": float, "clusters": int array}`.

    Reference:
        Vinh et al., "Information Theoretic Measures for Clusterings
        Comparison", JMLR 2010.
    """
    try:
        from sklearn import metrics
    except ImportError as error:
        raise ImportError(
            "clustering_scores needs scikit-learn: pip install "
            "'keras-circle[clustering]'."
        ) from error
    x = check_embeddings(embeddings, "embeddings", min_rows=2)
    labels = check_labels(labels, x.shape[0], "labels", "embeddings")
    k = num_clusters if num_clusters is not None else np.unique(labels).size
    if (
        isinstance(k, bool)
        or not isinstance(k, int | np.integer)
        or not 1 <= k <= len(x)
    ):
        raise ValueError(
            f"`num_clusters` must be an integer in [1, {len(x)}]; got {num_clusters!r}."
        )
    ensure_threads()
    kmeans = faiss.Kmeans(
        x.shape[1],
        int(k),
        niter=niter,
        nredo=nredo,
        seed=seed,
        spherical=True,
        min_points_per_centroid=1,
        verbose=False,
    )
    kmeans.train(x)
    _, clusters = kmeans.index.search(x, 1)
    clusters = clusters[:, 0]
    return {
        "NMI": float(metrics.normalized_mutual_info_score(labels, clusters)),
        "AMI": float(metrics.adjusted_mutual_info_score(labels, clusters)),
        "clusters": clusters,
    }
