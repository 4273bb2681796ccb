"""Recall@K, Precision@1, MAP@R and R-precision on the faiss search engine.

Neighbours come from `keras_circle.search.neighbours`: exact inner product of
L2-normalised float32 rows, searched a block of queries at a time (faiss tiles
the reference, so no `(num_queries, num_reference)` matrix is held). Ties:
among equal scores the lower reference index ranks first; scores that differ
only by float rounding (about 1e-7) may rank either way.

Two set-ups, as in pytorch-metric-learning's `AccuracyCalculator`: one set
searched leave-one-out (`reference=None`: each sample queries all the others,
its own row left out by position, so an exact duplicate of it still counts),
or queries against a separate `reference` set (nothing left out).
"""

import math

import numpy as np

from keras_circle.retrieval.checks import MEMORY_BUDGET
from keras_circle.retrieval.checks import check_block_size
from keras_circle.retrieval.checks import check_embedding_pair
from keras_circle.retrieval.checks import check_embeddings
from keras_circle.retrieval.checks import check_labels
from keras_circle.retrieval.checks import check_ranks
from keras_circle.retrieval.checks import progress
from keras_circle.search import neighbours
from keras_circle.search.engine import DEFAULT_BLOCK_SIZE


def prepare_sets(embeddings, labels, reference, reference_labels):
    """Checked `(queries, query_labels, reference, reference_labels, self)`."""
    if reference is None:
        if reference_labels is not None:
            raise ValueError(
                "`reference_labels` was given without `reference`; pass both, or "
                "neither for leave-one-out retrieval within `embeddings`."
            )
        q = check_embeddings(embeddings, "embeddings", min_rows=2)
        q_labels = check_labels(labels, q.shape[0], "labels", "embeddings")
        return q, q_labels, q, q_labels, True
    if reference_labels is None:
        raise ValueError("`reference_labels` is required with `reference`; got None.")
    q, r = check_embedding_pair(embeddings, reference, "embeddings", "reference")
    q_labels = check_labels(labels, q.shape[0], "labels", "embeddings")
    r_labels = check_labels(
        reference_labels, r.shape[0], "reference_labels", "reference"
    )
    return q, q_labels, r, r_labels, False


def _blocks(q, r, k, exclude_self, block_size, verbose):
    if block_size is None:
        # Scores, ids, label matches and their sums: about 64 bytes an entry.
        k_max = int(np.max(k)) if np.ndim(k) else int(k)
        block_size = min(
            DEFAULT_BLOCK_SIZE, max(1, MEMORY_BUDGET // (64 * (k_max + 2)))
        )
    bar = progress(math.ceil(q.shape[0] / block_size), verbose)
    found = neighbours(q, r, k, exclude_self=exclude_self, block_size=block_size)
    for i, block in enumerate(found):
        yield block
        if bar is not None:
            bar.update(i + 1)


def _by_class(values, labels, valid):
    """`{label: mean of values over its valid queries}` (classes with none left out)."""
    classes, inverse = np.unique(labels[valid], return_inverse=True)
    sums = np.bincount(inverse, values[valid], minlength=classes.size)
    counts = np.bincount(inverse, minlength=classes.size)
    return {int(c): float(s / n) for c, s, n in zip(classes, sums, counts, strict=True)}


def recall_at_k(
    embeddings,
    labels,
    ks=(1, 2, 4, 8),
    *,
    reference=None,
    reference_labels=None,
    per_class=False,
    block_size=None,
    verbose="auto",
):
    """Recall@K: the share of queries with a same-label sample among their K nearest.

    Ranked by cosine similarity. Leave-one-out within `embeddings` by default
    (the fine-grained protocol: CUB, Cars196, SOP), or the queries
    `embeddings` against `reference`. A query whose class has no other member
    in the reference counts as a miss. A K above the number of candidates is
    clamped to it. Ties: the lower reference index ranks first.

    Args:
        embeddings: the queries `(num_queries, dim)`; at least two rows
            without `reference`.
        labels: their integer class labels `(num_queries,)`.
        ks: The K values. Defaults to `(1, 2, 4, 8)` (SOP uses
            `(1, 10, 100, 1000)`).
        reference: array `(num_reference, dim)` searched instead of
            `embeddings` itself. Defaults to `None`: leave-one-out.
        reference_labels: its labels, required with `reference`. Defaults to
            `None`.
        per_class: return `{label: {k: recall}}` over each class's queries.
            Defaults to `False`.
        block_size: queries per faiss call (bounds the memory), or `None` for
            automatic (4096 at most). Defaults to `None`.
        verbose: `0`, `1`, or `"auto"` for a progress bar over blocks only
            when there are many. Defaults to `"auto"`.

    Returns:
        Dict `{k: recall}` with floats in `[0, 1]` (per class: see above).

    Example:

    >>> emb = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> keras_circle.retrieval.recall_at_k(emb, [0, 0, 1, 1], ks=(1,))
    {1: 1.0}

    Reference:
        Song et al., "Deep Metric Learning via Lifted Structured Feature
        Embedding", CVPR 2016 (the protocol); Sun et al., CVPR 2020.
    """
    ks = check_ranks(ks, "ks")
    check_block_size(block_size)
    q, q_labels, r, r_labels, self_search = prepare_sets(
        embeddings, labels, reference, reference_labels
    )
    num = q.shape[0]
    first_hit = np.full(num, np.iinfo(np.int64).max)
    for start, stop, _, ids in _blocks(q, r, max(ks), self_search, block_size, verbose):
        hits = r_labels[ids] == q_labels[start:stop, None]
        first_hit[start:stop] = np.where(
            hits.any(axis=1), hits.argmax(axis=1), first_hit[start:stop]
        )
    if per_class:
        valid = np.ones(num, bool)
        by_k = {k: _by_class(first_hit < k, q_labels, valid) for k in ks}
        return {c: {k: by_k[k][c] for k in ks} for c in by_k[ks[0]]}
    return {k: float(np.mean(first_hit < k)) for k in ks}


def precision_at_1(
    embeddings,
    labels,
    *,
    reference=None,
    reference_labels=None,
    per_class=False,
    block_size=None,
    verbose="auto",
):
    """Precision@1: the share of queries whose nearest sample shares their label.

    Equal to `recall_at_k(..., ks=(1,))[1]`; arguments as in `recall_at_k`.

    Returns:
        A float in `[0, 1]`, or `{label: value}` with `per_class`.
    """
    out = recall_at_k(
        embeddings,
        labels,
        ks=(1,),
        reference=reference,
        reference_labels=reference_labels,
        per_class=per_class,
        block_size=block_size,
        verbose=verbose,
    )
    return {c: v[1] for c, v in out.items()} if per_class else out[1]


def _top_r(
    embeddings, labels, reference, reference_labels, per_class, block_size, verbose
):
    """`{"map_at_r": ..., "r_precision": ...}`: means over the queries with R > 0.

    Both come from the same first-R neighbours; each value is a float, or
    `{label: value}` with `per_class`.
    """
    check_block_size(block_size)
    q, q_labels, r, r_labels, self_search = prepare_sets(
        embeddings, labels, reference, reference_labels
    )
    classes, counts = np.unique(r_labels, return_counts=True)
    where = np.clip(np.searchsorted(classes, q_labels), 0, classes.size - 1)
    relevant = np.where(classes[where] == q_labels, counts[where], 0)
    relevant = relevant - int(self_search)
    valid = relevant > 0
    if not valid.any():
        raise ValueError(
            "`labels` must have at least one class with two or more samples "
            "(or, with `reference`, one query whose class is in "
            "`reference_labels`); got only single-sample classes."
        )
    ap = np.zeros(q.shape[0])
    r_precision = np.zeros(q.shape[0])
    for start, stop, _, ids in _blocks(
        q, r, relevant, self_search, block_size, verbose
    ):
        r_block = relevant[start:stop]
        positions = np.arange(1, ids.shape[1] + 1)
        rel = r_labels[ids] == q_labels[start:stop, None]
        rel &= positions <= r_block[:, None]
        precision = np.cumsum(rel, axis=1) / positions
        ap[start:stop] = (precision * rel).sum(axis=1) / np.maximum(r_block, 1)
        r_precision[start:stop] = rel.sum(axis=1) / np.maximum(r_block, 1)
    if per_class:
        return {
            "map_at_r": _by_class(ap, q_labels, valid),
            "r_precision": _by_class(r_precision, q_labels, valid),
        }
    return {
        "map_at_r": float(ap[valid].mean()),
        "r_precision": float(r_precision[valid].mean()),
    }


def map_at_r(
    embeddings,
    labels,
    *,
    reference=None,
    reference_labels=None,
    per_class=False,
    block_size=None,
    verbose="auto",
):
    """MAP@R: mean average precision over each query's first R neighbours.

    For a query with R relevant samples (same label, itself left out),
    ranked by cosine similarity: `MAP@R = (1 / R) * sum_{i <= R} P(i) *
    rel(i)`, with `P(i)` the precision among the first i neighbours and
    `rel(i)` 1 when the i-th neighbour shares the label. Queries with R = 0
    have no defined MAP@R and are left out of the mean. Ties: the lower
    index ranks first. Arguments as in `recall_at_k`.

    Returns:
        A float in `[0, 1]`, or `{label: value}` with `per_class`.

    Raises:
        ValueError: if no query has R > 0.

    Reference:
        Musgrave et al., "A Metric Learning Reality Check", ECCV 2020.
    """
    return _top_r(
        embeddings, labels, reference, reference_labels, per_class, block_size, verbose
    )["map_at_r"]


def r_precision(
    embeddings,
    labels,
    *,
    reference=None,
    reference_labels=None,
    per_class=False,
    block_size=None,
    verbose="auto",
):
    """R-precision: the share of relevant samples among each query's first R.

    R is the query's number of relevant samples, as in `map_at_r`; queries
    with R = 0 are left out. Arguments as in `recall_at_k`.

    Returns:
        A float in `[0, 1]`, or `{label: value}` with `per_class`.

    Reference:
        Musgrave et al., "A Metric Learning Reality Check", ECCV 2020.
    """
    return _top_r(
        embeddings, labels, reference, reference_labels, per_class, block_size, verbose
    )["r_precision"]
