"""k-reciprocal re-ranking of re-ID distances (Zhong et al., CVPR 2017), NumPy and faiss.

The paper's steps over the union of query and gallery embeddings (as the
re-ID toolboxes apply it, so queries are each other's neighbours too):

- `N(p, k)`: `p` itself and its k nearest neighbours (cosine; ties to the
  lower position).
- Eq. 3: `R(p, k) = {g in N(p, k) : p in N(g, k)}`, the k-reciprocal set.
- Eq. 4: `R*(p, k)` adds `R(q, k/2)` (k/2 rounded half up) of every
  `q in R(p, k)` with `|R(p, k) & R(q, k/2)| >= 2/3 |R(q, k/2)|`.
- Eq. 7: `V[p, g] = exp(-d(p, g))` for `g in R*(p, k1)`, else 0, where `d`
  is the squared Euclidean distance of the L2-normalised embeddings
  (`2 - 2 cos`, in [0, 4]). No row normalisation: the paper has none.
- Eq. 10 (local query expansion): `V[p]` becomes the mean of `V[g]` over
  `g in N(p, k2 - 1)`, the k2 nearest counting `p` itself (k2 = 1: none).
- Eq. 11: `d_J(p, g) = 1 - sum_j min(V[p, j], V[g, j]) / sum_j max(...)`,
  summed over every query and gallery position j.
- Eq. 12: `d* = (1 - lambda) d_J + lambda d`.

Memory is not O((Q + G)^2): `V` is sparse (each row holds at most about
`k2 * |R*|` entries), neighbours are found blockwise with faiss, and the
`(Q, G)` result is produced a block of queries at a time. Time is about one
exact k-NN search of Q + G points plus O(Q * k2 * |R*|^2) for the Jaccard
sums.
"""

import numpy as np

from keras_circle import search
from keras_circle.retrieval.checks import check_embedding_pair

# `k_reciprocal_rerank` returns the whole (Q, G) float64 matrix: above this
# many entries (1 GiB) it refuses; `reid_metrics(rerank=True)` has no limit.
MAX_RESULT_ENTRIES = 2**27
# Query rows per block of the (Q, G) result.
_BLOCK_ROWS = 512


def check_rerank_params(k1, k2, lambda_value, names=("k1", "k2", "lambda_value")):
    """`(k1, k2, lambda_value)` as Python numbers, else a ValueError.

    The error names the argument as `names` spells it (`reid_metrics` calls
    them `rerank_k1`, ...).
    """
    k1_name, k2_name, lambda_name = names
    for name, value in ((k1_name, k1), (k2_name, k2)):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | np.integer)
            or value < 1
        ):
            raise ValueError(f"`{name}` must be a positive integer; got {value!r}.")
    if k2 > k1 + 1:
        raise ValueError(
            f"`{k2_name}` (query expansion) must be at most `{k1_name}` + 1 = "
            f"{k1 + 1}: the expansion averages over the k2 nearest of the "
            f"k1-neighbour lists; got {k2}."
        )
    if (
        isinstance(lambda_value, bool)
        or not isinstance(lambda_value, int | float | np.number)
        or not 0.0 <= float(lambda_value) <= 1.0
    ):
        raise ValueError(
            f"`{lambda_name}` must be a number in [0, 1] (the weight of the "
            f"original distance); got {lambda_value!r}."
        )
    return int(k1), int(k2), float(lambda_value)


def _neighbour_lists(x, k):
    """`(n, min(k, n - 1) + 1)` int64: each point itself, then its k nearest."""
    n = x.shape[0]
    k = min(k, n - 1)
    lists = np.empty((n, k + 1), np.int64)
    lists[:, 0] = np.arange(n)
    for start, stop, _, ids in search.neighbours(x, x, k, exclude_self=True):
        lists[start:stop, 1:] = ids
    return lists


def _reciprocal_sets(lists, k):
    """Eq. 3 for every point: the members g of `N(p, k)` with p in `N(g, k)`."""
    forward = lists[:, : k + 1]
    sets = []
    for start in range(0, forward.shape[0], 4096):
        block = forward[start : start + 4096]
        # back[i, a, b]: the b-th neighbour of the a-th neighbour of row i.
        back = forward[block]
        rows = np.arange(start, start + block.shape[0])[:, None, None]
        keep = np.any(back == rows, axis=2)
        sets.extend(block[i][keep[i]] for i in range(block.shape[0]))
    return sets


def _encodings(x, lists, k1, k2):
    """Eq. 4, 7 and 10: the sparse rows of V as `(cols, values)` per point."""
    available = lists.shape[1] - 1  # k1, or fewer in a small set
    half = min(max(1, (k1 + 1) // 2), available)
    full = _reciprocal_sets(lists, available)
    halves = [set(r.tolist()) for r in _reciprocal_sets(lists, half)]
    rows = []
    for p, base in enumerate(full):
        base_set = set(base.tolist())
        star = set(base_set)
        for q in base_set:
            h = halves[q]
            # |R & R_half| >= 2/3 |R_half|, in integers.
            if 3 * len(base_set & h) >= 2 * len(h):
                star |= h
        cols = np.fromiter(sorted(star), np.int64, len(star))
        d = np.maximum(2.0 - 2.0 * (x[cols].astype(np.float64) @ x[p]), 0.0)
        rows.append((cols, np.exp(-d)))
    k2 = min(k2, lists.shape[1])
    if k2 == 1:
        return rows
    expanded = []
    for p in range(len(rows)):
        parts = [rows[g] for g in lists[p, :k2]]
        cols = np.concatenate([c for c, _ in parts])
        vals = np.concatenate([v for _, v in parts])
        uniq, inverse = np.unique(cols, return_inverse=True)
        expanded.append((uniq, np.bincount(inverse, weights=vals) / k2))
    return expanded


def rerank_blocks(query, gallery, k1=20, k2=6, lambda_value=0.3, block_rows=None):
    """Yields `(start, stop, distances)`: rows `start:stop` of the re-ranked matrix.

    As `k_reciprocal_rerank`, a block of queries at a time (float64
    `(stop - start, num_gallery)`), so that no `(Q, G)` matrix is held.
    `query` and `gallery` must already be checked (`check_embedding_pair`).
    """
    k1, k2, lambda_value = check_rerank_params(k1, k2, lambda_value)
    num_q = query.shape[0]
    x = np.concatenate([query, gallery])
    lists = _neighbour_lists(x, k1)
    rows = _encodings(x, lists, k1, k2)
    sums = np.array([v.sum() for _, v in rows])
    # Column postings of the gallery rows: for column j, the gallery rows
    # with a non-zero V[., j] and their values.
    g_rows = np.concatenate(
        [np.full(c.size, r, np.int64) for r, (c, _) in enumerate(rows[num_q:])]
    )
    g_cols = np.concatenate([c for c, _ in rows[num_q:]])
    g_vals = np.concatenate([v for _, v in rows[num_q:]])
    order = np.argsort(g_cols, kind="stable")
    g_rows, g_cols, g_vals = g_rows[order], g_cols[order], g_vals[order]
    col_ptr = np.searchsorted(g_cols, np.arange(x.shape[0] + 1))
    g_sums = sums[num_q:]
    block_rows = block_rows or _BLOCK_ROWS
    for start in range(0, num_q, block_rows):
        stop = min(start + block_rows, num_q)
        original = np.maximum(
            2.0
            - 2.0
            * (query[start:stop].astype(np.float64) @ gallery.T.astype(np.float64)),
            0.0,
        )
        jaccard = np.empty_like(original)
        for i in range(start, stop):
            cols, vals = rows[i]
            begin, lengths = col_ptr[cols], col_ptr[cols + 1] - col_ptr[cols]
            total = int(lengths.sum())
            # Positions of every posting of every column of row i.
            offsets = np.repeat(begin - np.cumsum(lengths) + lengths, lengths)
            idx = offsets + np.arange(total)
            mins = np.minimum(np.repeat(vals, lengths), g_vals[idx])
            shared = np.bincount(g_rows[idx], weights=mins, minlength=g_sums.size)
            # sum max = sum a + sum b - sum min (Eq. 11's denominator).
            jaccard[i - start] = 1.0 - shared / (sums[i] + g_sums - shared)
        yield start, stop, (1.0 - lambda_value) * jaccard + lambda_value * original


def k_reciprocal_rerank(query, gallery, k1=20, k2=6, lambda_value=0.3):
    """Re-ranked distances of queries to a gallery (k-reciprocal encoding).

    Unsupervised re-ranking for person re-ID: a gallery image that is among
    the query's k-reciprocal nearest neighbours, or shares many of them, is
    moved closer. Neighbours are taken over the union of query and gallery
    images. Smaller is closer. The steps, and the choices the paper leaves
    open, are in this module's docstring. Memory stays near linear in
    `Q + G` except for the returned matrix; `retrieval.reid_metrics(...,
    rerank=True)` uses it block by block instead.

    Args:
        query: Embeddings `(num_queries, dim)`; L2-normalised here.
        gallery: Embeddings `(num_gallery, dim)`.
        k1: Size of the k-reciprocal neighbourhood. Defaults to `20`.
        k2: Neighbours (the point itself counted) averaged by local query
            expansion; `1` for none. Defaults to `6`.
        lambda_value: Weight of the original distance in the final one.
            Defaults to `0.3`.

    Returns:
        float64 array `(num_queries, num_gallery)`:
        `(1 - lambda) * jaccard + lambda * squared_euclidean`.

    Raises:
        ValueError: for bad embeddings or parameters, or when the result
            would have more than `MAX_RESULT_ENTRIES` entries.

    Reference:
        Zhong et al., "Re-ranking Person Re-identification with k-reciprocal
        Encoding", CVPR 2017 (k1 20, k2 6, lambda 0.3 in its experiments).
    """
    check_rerank_params(k1, k2, lambda_value)
    q, g = check_embedding_pair(query, gallery, "query", "gallery")
    entries = q.shape[0] * g.shape[0]
    if entries > MAX_RESULT_ENTRIES:
        raise ValueError(
            f"k_reciprocal_rerank returns a (num_queries, num_gallery) float64 "
            f"matrix: {q.shape[0]} x {g.shape[0]} = {entries} entries is more "
            f"than its limit of {MAX_RESULT_ENTRIES} (1 GiB); "
            "`retrieval.reid_metrics(..., rerank=True)` re-ranks block by "
            "block without one."
        )
    out = np.empty((q.shape[0], g.shape[0]), np.float64)
    for start, stop, block in rerank_blocks(q, g, k1, k2, lambda_value):
        out[start:stop] = block
    return out
