"""Retrieval, re-identification and verification metrics, blockwise in NumPy.

Every metric ranks by cosine similarity of L2-normalised float32 embeddings
and works on blocks of queries, so no `(num_queries, num_gallery)` matrix is
ever held: the block size follows from a memory budget (256 MiB by default).
Ties are broken deterministically: among equal similarities the lower
gallery index ranks first. NumPy only, so it runs whatever the Keras backend.
"""

import math

import numpy as np

# Rows of a block stop at this many even when the memory budget allows more:
# bigger matmuls gain nothing on CPU and the progress bar stays useful.
_MAX_BLOCK_ROWS = 1024
_MEMORY_BUDGET = 256 * 2**20
# "auto" verbosity shows a progress bar from this many blocks on.
_AUTO_PROGRESS_BLOCKS = 32


def _to_numpy(x, name):
    if x is None:
        raise ValueError(f"`{name}` is required; got None.")
    if not isinstance(x, np.ndarray) and hasattr(x, "shape"):
        import keras  # Tensors of any backend; lazy so NumPy users skip it.

        x = keras.ops.convert_to_numpy(x)
    return np.asarray(x)


def _check_embeddings(x, name, min_rows=1):
    x = _to_numpy(x, name)
    if x.ndim != 2:
        raise ValueError(
            f"`{name}` must be 2-D `(num_samples, dim)`; got shape {x.shape}."
        )
    if x.shape[0] < min_rows or x.shape[1] == 0:
        raise ValueError(
            f"`{name}` must have at least {min_rows} row(s) and one column; "
            f"got shape {x.shape}."
        )
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise ValueError(f"`{name}` must be real numbers; got dtype {x.dtype}.")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    # Checked before the float32 cast, which would turn values beyond
    # float32's range into inf; `_normalize` rescales rows first.
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        bad = int(np.argmin(finite))
        raise ValueError(
            f"`{name}` must be finite; got NaN or inf, first in row {bad}."
        )
    return x


def _check_ids(x, num, name, expected_name):
    x = _to_numpy(x, name)
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 1 or x.shape[0] != num:
        raise ValueError(
            f"`{name}` must have shape ({num},), one entry per row of "
            f"`{expected_name}`; got shape {x.shape}."
        )
    if x.dtype == bool or np.issubdtype(x.dtype, np.integer):
        return x.astype(np.int64)
    if np.issubdtype(x.dtype, np.floating):
        whole = np.isfinite(x) & (x == np.round(x))
        if not np.all(whole):
            bad = int(np.argmin(whole))
            raise ValueError(
                f"`{name}` must hold integers; got {x[bad].item()!r} at index {bad}."
            )
        return x.astype(np.int64)
    raise ValueError(f"`{name}` must hold integers; got dtype {x.dtype}.")


def _check_ranks(ks, name):
    values = (ks,) if np.ndim(ks) == 0 else tuple(ks)
    ok = len(values) > 0 and all(
        isinstance(k, int | np.integer) and not isinstance(k, bool) and k >= 1
        for k in values
    )
    if not ok:
        raise ValueError(f"`{name}` must be positive integers; got {ks!r}.")
    return tuple(int(k) for k in values)


def _check_block_size(block_size):
    if block_size is not None and (
        isinstance(block_size, bool)
        or not isinstance(block_size, int | np.integer)
        or block_size < 1
    ):
        raise ValueError(
            "`block_size` must be a positive integer (queries per block) or "
            f"None for automatic; got {block_size!r}."
        )
    return block_size


def _normalize(x):
    """Float32 unit rows of finite `x`; a zero row stays zero.

    Each row is first divided by its largest magnitude, so its squares can
    neither overflow (norms above ~1.8e19 in float32) nor underflow (below
    ~1e-19): scaling a row by any positive factor leaves it unchanged.
    """
    scale = np.max(np.abs(x), axis=1, keepdims=True)
    scale[scale == 0] = 1
    y = (x / scale).astype(np.float32, copy=False)
    # Every entry is now in [-1, 1] and one is +-1: the norm is in [1, sqrt(dim)].
    norms = np.linalg.norm(y, axis=1, keepdims=True)
    norms[norms == 0] = 1
    y /= norms
    return y


def _progress(num_blocks, verbose):
    if verbose == "auto":
        verbose = num_blocks >= _AUTO_PROGRESS_BLOCKS
    if not verbose:
        return None
    import keras

    return keras.utils.Progbar(num_blocks, unit_name="block")


def _query_blocks(
    queries, gallery, bytes_per_entry, block_size, verbose, exclude_self=False
):
    """Yields `(start, stop, sims)`, sims of `queries[start:stop]` vs gallery.

    `bytes_per_entry` is what the caller spends per similarity entry
    (similarities, indices, masks); it sets the block size from the budget.
    With `exclude_self`, queries are the gallery and the self-pair is -inf.
    """
    num, num_gallery = queries.shape[0], gallery.shape[0]
    if block_size is None:
        block_size = _MEMORY_BUDGET // max(1, bytes_per_entry * num_gallery)
        block_size = int(min(max(block_size, 1), _MAX_BLOCK_ROWS))
    num_blocks = math.ceil(num / block_size)
    bar = _progress(num_blocks, verbose)
    for i, start in enumerate(range(0, num, block_size)):
        stop = min(start + block_size, num)
        sims = queries[start:stop] @ gallery.T
        if exclude_self:
            sims[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        yield start, stop, sims
        if bar is not None:
            bar.update(i + 1)


def _top_k(sims, k):
    """Column indices of each row's `k` largest entries, best first.

    Among equal similarities the lower column ranks first. A full
    `argpartition` costs about 10 ns an entry; instead a lower bound of the
    k-th largest value comes from the k-th largest maximum of chunks of
    columns (k distinct entries reach it), so only the few entries at or
    above the bound are gathered and sorted.
    """
    rows_in_block, num = sims.shape
    chunk = min(64, num // (4 * k))
    if chunk >= 2:
        full = num - num % chunk
        maxima = sims[:, :full].reshape(rows_in_block, -1, chunk).max(axis=2)
        bound = np.partition(maxima, maxima.shape[1] - k, axis=1)[:, -k]
    else:
        bound = np.partition(sims, num - k, axis=1)[:, num - k]
    # flatnonzero + divmod is ~10x faster than a 2-D nonzero.
    rows, cols = np.divmod(np.flatnonzero(sims >= bound[:, None]), num)
    order = np.lexsort((cols, -sims[rows, cols], rows))
    rows, cols = rows[order], cols[order]
    first = np.searchsorted(rows, np.arange(rows_in_block))
    keep = np.arange(rows.size) - first[rows] < k
    return cols[keep].reshape(rows_in_block, k)


def recall_at_k(
    embeddings, labels, ks=(1, 2, 4, 8), *, block_size=None, verbose="auto"
):
    """Recall@K of leave-one-out retrieval within one set.

    Each sample queries all other samples, ranked by cosine similarity; it
    scores 1 at K when one of its K nearest neighbours shares its label. The
    result is the mean over all queries: a sample whose class has no other
    member counts as a miss (the fine-grained benchmarks CUB, Cars196 and SOP
    have at least two images per class). A K above the number of other
    samples is clamped to it. Ties: the lower index ranks first.

    Args:
        embeddings: Array `(num_samples, dim)`, at least two rows.
        labels: Integer class labels `(num_samples,)`.
        ks: The K values. Defaults to `(1, 2, 4, 8)` (SOP uses
            `(1, 10, 100, 1000)`).
        block_size: Queries per block, or `None` to choose it from a 256 MiB
            budget. Defaults to `None`.
        verbose: `0`, `1`, or `"auto"` for a progress bar over blocks only
            when there are many. Defaults to `"auto"`.

    Returns:
        Dict `{k: recall}` with floats in `[0, 1]`.

    Example:

    >>> emb = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> keras_circle.retrieval.recall_at_k(emb, [0, 0, 1, 1], ks=(1,))
    {1: 1.0}

    Reference:
        Song et al., "Deep Metric Learning via Lifted Structured Feature
        Embedding", CVPR 2016 (the protocol); Sun et al., CVPR 2020.
    """
    ks = _check_ranks(ks, "ks")
    _check_block_size(block_size)
    x = _normalize(_check_embeddings(embeddings, "embeddings", min_rows=2))
    labels = _check_ids(labels, x.shape[0], "labels", "embeddings")
    num = x.shape[0]
    k_max = min(max(ks), num - 1)
    first_hit = np.empty(num, np.int64)
    for start, stop, sims in _query_blocks(x, x, 16, block_size, verbose, True):
        hits = labels[_top_k(sims, k_max)] == labels[start:stop, None]
        first_hit[start:stop] = np.where(hits.any(axis=1), hits.argmax(axis=1), num)
    return {k: float(np.mean(first_hit < min(k, num - 1))) for k in ks}


def precision_at_1(embeddings, labels, *, block_size=None, verbose="auto"):
    """Precision@1: the fraction of samples whose nearest other sample shares
    its label. Equal to `recall_at_k(..., ks=(1,))[1]`; see `recall_at_k`.

    Args:
        embeddings: Array `(num_samples, dim)`, at least two rows.
        labels: Integer class labels `(num_samples,)`.
        block_size: Queries per block, or `None` for automatic. Defaults to
            `None`.
        verbose: `0`, `1` or `"auto"`. Defaults to `"auto"`.

    Returns:
        A float in `[0, 1]`.
    """
    return recall_at_k(
        embeddings, labels, ks=(1,), block_size=block_size, verbose=verbose
    )[1]


def map_at_r(embeddings, labels, *, block_size=None, verbose="auto"):
    """MAP@R of leave-one-out retrieval within one set.

    For a query with R other samples of its class, ranked by cosine
    similarity: `MAP@R = (1 / R) * sum_{i <= R} P(i) * rel(i)`, with `P(i)`
    the precision among the first i neighbours and `rel(i)` 1 when the i-th
    neighbour shares the label. Queries with R = 0 (single-sample classes)
    have no defined MAP@R and are left out of the mean. Ties: the lower
    index ranks first.

    Args:
        embeddings: Array `(num_samples, dim)`, at least two rows.
        labels: Integer class labels `(num_samples,)`.
        block_size: Queries per block, or `None` for automatic. Defaults to
            `None`.
        verbose: `0`, `1` or `"auto"`. Defaults to `"auto"`.

    Returns:
        A float in `[0, 1]`.

    Raises:
        ValueError: if no class has two samples (no query has R > 0).

    Reference:
        Musgrave et al., "A Metric Learning Reality Check", ECCV 2020.
    """
    _check_block_size(block_size)
    x = _normalize(_check_embeddings(embeddings, "embeddings", min_rows=2))
    labels = _check_ids(labels, x.shape[0], "labels", "embeddings")
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    r = counts[inverse] - 1
    if not np.any(r > 0):
        raise ValueError(
            "`labels` must have at least one class with two or more samples "
            "for MAP@R; got only single-sample classes."
        )
    # Top-R lists of large classes cost about 40 bytes per entry on top.
    cost = 16 + int(40 * r.max() / x.shape[0])
    total = 0.0
    for start, stop, sims in _query_blocks(x, x, cost, block_size, verbose, True):
        r_block = r[start:stop]
        r_max = int(r_block.max())
        if r_max == 0:
            continue
        positions = np.arange(1, r_max + 1)
        rel = labels[_top_k(sims, r_max)] == labels[start:stop, None]
        rel &= positions <= r_block[:, None]
        precision = np.cumsum(rel, axis=1) / positions
        ap = (precision * rel).sum(axis=1) / np.maximum(r_block, 1)
        total += float(ap[r_block > 0].sum())
    return total / int(np.count_nonzero(r > 0))


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

    Returns:
        Dict with `"cmc"` (`{rank: value}`), `"mAP"` and
        `"num_valid_queries"`.

    Raises:
        ValueError: if no query has a valid match in the gallery.

    Reference:
        Zheng et al., "Scalable Person Re-identification: A Benchmark",
        ICCV 2015.
    """
    ranks = _check_ranks(ranks, "ranks")
    _check_block_size(block_size)
    q = _check_embeddings(query_embeddings, "query_embeddings")
    g = _check_embeddings(gallery_embeddings, "gallery_embeddings")
    if q.shape[1] != g.shape[1]:
        raise ValueError(
            "`query_embeddings` and `gallery_embeddings` must have the same "
            f"dim; got {q.shape[1]} and {g.shape[1]}."
        )
    q_ids = _check_ids(query_ids, q.shape[0], "query_ids", "query_embeddings")
    q_cams = _check_ids(query_cams, q.shape[0], "query_cams", "query_embeddings")
    g_ids = _check_ids(gallery_ids, g.shape[0], "gallery_ids", "gallery_embeddings")
    g_cams = _check_ids(gallery_cams, g.shape[0], "gallery_cams", "gallery_embeddings")
    # Dropping junk up front keeps the gallery order, so the tie rule holds.
    keep = g_ids != -1
    g, g_ids, g_cams = _normalize(g[keep]), g_ids[keep], g_cams[keep]
    if g.shape[0] == 0:
        raise ValueError("`gallery_ids` must not be all junk (-1).")
    q = _normalize(q)

    first_hit, ap = [], []
    for start, stop, sims in _query_blocks(q, g, 64, block_size, verbose):
        same_id = g_ids == q_ids[start:stop, None]
        valid = ~(same_id & (g_cams == q_cams[start:stop, None]))
        match = same_id & valid
        num_matches = match.sum(axis=1)
        # Only entries at or above a row's lowest match can rank before a
        # match, so only those are sorted.
        lowest = np.where(match, sims, np.inf).min(axis=1, keepdims=True)
        rows, cols = np.divmod(np.flatnonzero(valid & (sims >= lowest)), sims.shape[1])
        order = np.lexsort((cols, -sims[rows, cols], rows))
        rows, cols = rows[order], cols[order]
        row_start = np.searchsorted(rows, np.arange(stop - start))
        position = np.arange(rows.size) - row_start[rows]
        is_match = match[rows, cols]
        seen = np.cumsum(is_match)
        seen -= np.concatenate([[0], seen])[row_start][rows]
        hit_rows = rows[is_match]
        precision = seen[is_match] / (position[is_match] + 1)
        block_ap = np.bincount(hit_rows, precision, minlength=stop - start)
        first = np.full(stop - start, np.iinfo(np.int64).max)
        firsts = is_match & (seen == 1)
        first[rows[firsts]] = position[firsts]
        has = num_matches > 0
        first_hit.append(first[has])
        ap.append(block_ap[has] / num_matches[has])
    first_hit, ap = np.concatenate(first_hit), np.concatenate(ap)
    if first_hit.size == 0:
        raise ValueError(
            "No query has a valid match in the gallery (same id on another "
            "camera); check `query_ids`, `query_cams`, `gallery_ids` and "
            "`gallery_cams`."
        )
    return {
        "cmc": {k: float(np.mean(first_hit < k)) for k in ranks},
        "mAP": float(np.mean(ap)),
        "num_valid_queries": int(first_hit.size),
    }


def _best_threshold(sims, same):
    """Threshold with the best accuracy (accept iff sim >= threshold).

    Candidates are the midpoints between consecutive distinct similarities
    plus one below and one above all of them; among equally good ones the
    smallest wins.
    """
    unique = np.unique(sims)
    candidates = np.concatenate(
        [[unique[0] - 1.0], (unique[:-1] + unique[1:]) / 2, [unique[-1] + 1.0]]
    )
    pos, neg = np.sort(sims[same]), np.sort(sims[~same])
    true_accepts = pos.size - np.searchsorted(pos, candidates, side="left")
    true_rejects = np.searchsorted(neg, candidates, side="left")
    return float(candidates[np.argmax(true_accepts + true_rejects)])


def _roc(sims, same):
    order = np.argsort(-sims, kind="stable")
    sorted_sims = sims[order]
    true_pos = np.cumsum(same[order])
    false_pos = np.cumsum(~same[order])
    # One ROC point per distinct threshold: the last entry of each run.
    last = np.flatnonzero(np.diff(sorted_sims, append=-np.inf) != 0)
    tpr = np.concatenate([[0.0], true_pos[last] / true_pos[-1]])
    fpr = np.concatenate([[0.0], false_pos[last] / false_pos[-1]])
    thresholds = np.concatenate([[np.inf], sorted_sims[last]])
    return {"fpr": fpr, "tpr": tpr, "thresholds": thresholds}


def verification_metrics(
    embeddings_a,
    embeddings_b,
    is_same,
    fars=(1e-3, 1e-4),
    folds=10,
    *,
    block_size=None,
):
    """Face verification metrics of pairs (the LFW and IJB protocols).

    Each pair scores the cosine similarity of its two embeddings and is
    accepted as "same" when the score is >= a threshold. Accuracy is 10-fold
    cross-validated: pairs are cut into `folds` contiguous blocks in list
    order (LFW's pairs.txt holds its ten folds in that order); for each fold
    the threshold with the best accuracy on the other folds (midpoints between
    distinct scores, the smallest on ties) is applied to it.
    `accuracy_std` is the population standard deviation over folds. TAR at
    FAR uses all pairs: the threshold is the smallest one that accepts at most
    `floor(far * num_impostors)` impostor pairs; a FAR below
    `1 / num_impostors` therefore means "no false accept at all".

    Args:
        embeddings_a: Array `(num_pairs, dim)`, first image of each pair.
        embeddings_b: Array `(num_pairs, dim)`, second image of each pair.
        is_same: Bool or 0/1 `(num_pairs,)`, True for genuine pairs.
        fars: False-accept rates in (0, 1). Defaults to `(1e-3, 1e-4)`.
        folds: Number of cross-validation folds. Defaults to `10`.
        block_size: Pairs per block, or `None` for automatic. Defaults to
            `None`.

    Returns:
        Dict with `"accuracy"`, `"accuracy_std"`, `"fold_accuracies"`,
        `"fold_thresholds"`, `"tar_at_far"` (`{far: tar}`),
        `"far_thresholds"` (`{far: threshold}`), `"roc"` (`{"fpr", "tpr",
        "thresholds"}` arrays, thresholds falling, first inf) and `"auc"`.

    Reference:
        Huang et al., "Labeled Faces in the Wild", UMass TR 07-49, 2007.
    """
    _check_block_size(block_size)
    a = _check_embeddings(embeddings_a, "embeddings_a")
    b = _check_embeddings(embeddings_b, "embeddings_b")
    if a.shape != b.shape:
        raise ValueError(
            "`embeddings_a` and `embeddings_b` must have the same shape; got "
            f"{a.shape} and {b.shape}."
        )
    same = _check_ids(is_same, a.shape[0], "is_same", "embeddings_a")
    if not np.all((same == 0) | (same == 1)):
        raise ValueError(
            f"`is_same` must be bool or 0/1; got values {np.unique(same)}."
        )
    same = same.astype(bool)
    if same.all() or not same.any():
        raise ValueError("`is_same` must hold both genuine and impostor pairs.")
    if not isinstance(folds, int | np.integer) or not 2 <= folds <= a.shape[0]:
        raise ValueError(
            f"`folds` must be an integer in [2, num_pairs={a.shape[0]}]; got {folds!r}."
        )
    fars = tuple(fars) if np.ndim(fars) else (fars,)
    if not fars or not all(0 < far < 1 for far in fars):
        raise ValueError(f"`fars` must be rates in (0, 1); got {fars!r}.")

    rows = block_size or max(1, _MEMORY_BUDGET // (16 * a.shape[1]))
    sims = np.concatenate(
        [
            np.einsum(
                "ij,ij->i", _normalize(a[i : i + rows]), _normalize(b[i : i + rows])
            )
            for i in range(0, a.shape[0], rows)
        ]
    ).astype(np.float64)

    accuracies, thresholds = [], []
    for test in np.array_split(np.arange(sims.size), folds):
        train = np.ones(sims.size, bool)
        train[test] = False
        threshold = _best_threshold(sims[train], same[train])
        accuracies.append(np.mean((sims[test] >= threshold) == same[test]))
        thresholds.append(threshold)

    impostors = np.sort(sims[~same])[::-1]
    tar_at_far, far_thresholds = {}, {}
    for far in fars:
        # The 1e-9 guards floor() against far * n landing just under an integer.
        allowed = int(math.floor(far * impostors.size + 1e-9))
        threshold = (
            -np.inf
            if allowed >= impostors.size
            else float(np.nextafter(impostors[allowed], np.inf))
        )
        tar_at_far[far] = float(np.mean(sims[same] >= threshold))
        far_thresholds[far] = threshold
    roc = _roc(sims, same)
    return {
        "accuracy": float(np.mean(accuracies)),
        "accuracy_std": float(np.std(accuracies)),
        "fold_accuracies": np.asarray(accuracies),
        "fold_thresholds": np.asarray(thresholds),
        "tar_at_far": tar_at_far,
        "far_thresholds": far_thresholds,
        "roc": roc,
        "auc": float(np.trapezoid(roc["tpr"], roc["fpr"])),
    }
