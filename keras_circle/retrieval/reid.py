"""Person re-identification metrics (the Market-1501 protocol), blockwise in NumPy.

Every gallery image counts in a query's ranking (junk aside), so the full
similarity row of each query is computed, a block of queries at a time.
Nothing is sorted: CMC and AP need only the position of each match in the
filtered ranking, which is the number of valid gallery entries ranked above
it (scored higher, or equal with a lower index), counted among the entries
scored at least as high as the query's lowest match.
"""

import numpy as np

from keras_circle.retrieval.checks import check_block_size
from keras_circle.retrieval.checks import check_embedding_pair
from keras_circle.retrieval.checks import check_labels
from keras_circle.retrieval.checks import check_ranks
from keras_circle.retrieval.checks import query_blocks
from keras_circle.retrieval.rerank import check_rerank_params
from keras_circle.retrieval.rerank import rerank_blocks

# Comparisons held at once when counting (matches x candidates booleans).
_COUNT_BUDGET = 16 * 2**20


def _match_positions(sims, valid, match):
    """Sorted 0-based positions of a query's matches in its filtered ranking.

    Args:
        sims: similarities `(num_gallery,)` of one query.
        valid: bool `(num_gallery,)`: entries in its ranking.
        match: bool `(num_gallery,)`: its matches (a subset of `valid`).

    Returns:
        int64 array, ascending: for each match, the valid entries with a
        higher score, or an equal score and a lower index.
    """
    cols = np.flatnonzero(match)
    if cols.size == 0:
        return cols
    scores = sims[cols]
    # Entries below the lowest match rank after every match.
    candidates = np.flatnonzero(valid & (sims >= scores.min()))
    values = sims[candidates]
    step = max(1, _COUNT_BUDGET // max(1, candidates.size))
    positions = np.empty(cols.size, np.int64)
    for i in range(0, cols.size, step):
        t = scores[i : i + step, None]
        above = np.count_nonzero(values > t, axis=1)
        equal = np.count_nonzero(values == t, axis=1)
        # Ties (the match itself is one of its equals): lower index first.
        for j in np.flatnonzero(equal > 1):
            tied = (values == t[j]) & (candidates < cols[i + j])
            above[j] += np.count_nonzero(tied)
        positions[i : i + step] = above
    positions.sort()
    return positions


def reid_metrics(
    query_embeddings,
    query_ids,
    query_cams,
    gallery_embeddings,
    gallery_ids,
    gallery_cams,
    ranks=(1, 5, 10),
    *,
    block_size=None,
    verbose="auto",
    curve=False,
    rerank=False,
    rerank_k1=20,
    rerank_k2=6,
    rerank_lambda=0.3,
):
    """CMC and mAP of person re-identification (the Market-1501 protocol).

    For each query, gallery images with its identity *and* its camera are
    removed; junk gallery images (id -1) are ignored everywhere; distractors
    (id 0) stay in the ranking as negatives. Queries left with no valid
    match are excluded from CMC and mAP, as in the official evaluation.
    CMC rank-k is the fraction of queries whose first correct match is in
    the top k; AP is the non-interpolated average precision over the
    filtered ranking (mean of precision at each correct match, as in
    open-reid, torchreid and fast-reid). Ties: the lower gallery index ranks
    first.

    Args:
        query_embeddings: Array `(num_queries, dim)`.
        query_ids: Integer identities `(num_queries,)`.
        query_cams: Integer camera ids `(num_queries,)`.
        gallery_embeddings: Array `(num_gallery, dim)`.
        gallery_ids: Integer identities `(num_gallery,)`; -1 junk, 0
            distractor.
        gallery_cams: Integer camera ids `(num_gallery,)`.
        ranks: CMC ranks to report. Defaults to `(1, 5, 10)`.
        block_size: Queries per block, or `None` for automatic. Defaults to
            `None`.
        verbose: `0`, `1` or `"auto"`. Defaults to `"auto"`.
        curve: Also return the whole CMC curve. Defaults to `False`.
        rerank: Rank by the k-reciprocal re-ranked distance
            (`retrieval.k_reciprocal_rerank`, over the queries and the
            gallery without its junk) instead of the cosine similarity.
            Defaults to `False`.
        rerank_k1, rerank_k2, rerank_lambda: Its `k1`, `k2` and
            `lambda_value`. Default to `20`, `6` and `0.3` (the paper's).

    Returns:
        Dict with `"cmc"` (`{rank: value}`), `"mAP"` and
        `"num_valid_queries"`; with `curve=True` also `"cmc_curve"`, a float
        array `(num_gallery,)` whose entry `k - 1` is CMC rank-k, for every
        k from 1 to the gallery size (junk left out).

    Raises:
        ValueError: if no query has a valid match in the gallery.

    Reference:
        Zheng et al., "Scalable Person Re-identification: A Benchmark",
        ICCV 2015. Zhong et al., "Re-ranking Person Re-identification with
        k-reciprocal Encoding", CVPR 2017 (`rerank`).
    """
    ranks = check_ranks(ranks, "ranks")
    check_block_size(block_size)
    if not isinstance(rerank, bool | np.bool_):
        raise ValueError(f"`rerank` must be True or False; got {rerank!r}.")
    if rerank:
        params = check_rerank_params(
            rerank_k1,
            rerank_k2,
            rerank_lambda,
            names=("rerank_k1", "rerank_k2", "rerank_lambda"),
        )
    q, g = check_embedding_pair(
        query_embeddings, gallery_embeddings, "query_embeddings", "gallery_embeddings"
    )
    q_ids = check_labels(query_ids, q.shape[0], "query_ids", "query_embeddings")
    q_cams = check_labels(query_cams, q.shape[0], "query_cams", "query_embeddings")
    g_ids = check_labels(gallery_ids, g.shape[0], "gallery_ids", "gallery_embeddings")
    g_cams = check_labels(
        gallery_cams, g.shape[0], "gallery_cams", "gallery_embeddings"
    )
    # Dropping junk up front keeps the gallery order, so the tie rule holds.
    keep = g_ids != -1
    g, g_ids, g_cams = g[keep], g_ids[keep], g_cams[keep]
    if g.shape[0] == 0:
        raise ValueError("`gallery_ids` must not be all junk (-1).")

    if rerank:
        # Smaller re-ranked distance ranks first: negate it into a score.
        blocks = (
            (start, stop, -dist)
            for start, stop, dist in rerank_blocks(q, g, *params, block_size)
        )
    else:
        blocks = query_blocks(q, g, 12, block_size, verbose)
    first_hit, ap = [], []
    for start, stop, sims in blocks:
        same_id = g_ids == q_ids[start:stop, None]
        valid = ~(same_id & (g_cams == q_cams[start:stop, None]))
        match = same_id & valid
        for row in range(stop - start):
            positions = _match_positions(sims[row], valid[row], match[row])
            if positions.size:
                first_hit.append(positions[0])
                seen = np.arange(1, positions.size + 1)
                ap.append(np.mean(seen / (positions + 1)))
    first_hit, ap = np.asarray(first_hit, np.int64), np.asarray(ap, np.float64)
    if first_hit.size == 0:
        raise ValueError(
            "No query has a valid match in the gallery (same id on another "
            "camera); check `query_ids`, `query_cams`, `gallery_ids` and "
            "`gallery_cams`."
        )
    out = {
        "cmc": {k: float(np.mean(first_hit < k)) for k in ranks},
        "mAP": float(np.mean(ap)),
        "num_valid_queries": int(first_hit.size),
    }
    if curve:
        # Rank-k rate: queries whose first match sits at a position < k.
        hits = np.bincount(first_hit, minlength=g.shape[0])
        out["cmc_curve"] = np.cumsum(hits) / first_hit.size
    return out
