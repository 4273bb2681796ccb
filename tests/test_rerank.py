"""k-reciprocal re-ranking against a plain float64 loop over sets (the paper's equations)."""

import itertools
from fractions import Fraction

import numpy as np
import pytest

from keras_circle import retrieval
from keras_circle.retrieval import rerank


def reference_rerank(query, gallery, k1, k2, lambda_value):
    """Zhong et al. 2017, Eq. 2-12, one set and one loop at a time.

    Written from the paper, independently of `keras_circle.retrieval.rerank`:
    points are the union of query and gallery rows; `N(p, k)` is p and its k
    nearest others (ties to the lower position); k1/2 rounds half up.
    """
    x = np.concatenate([query, gallery]).astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    n, num_q = len(x), len(query)
    dist = np.array([[np.sum((x[i] - x[j]) ** 2) for j in range(n)] for i in range(n)])

    def nearest(p, k):
        others = sorted((j for j in range(n) if j != p), key=lambda j: (dist[p, j], j))
        return [p] + others[:k]

    def reciprocal(p, k):
        return {g for g in nearest(p, k) if p in nearest(g, k)}

    half = (k1 + 1) // 2
    v = np.zeros((n, n))
    for p in range(n):
        base = reciprocal(p, k1)
        expanded = set(base)
        for q in base:
            candidate = reciprocal(q, half)
            if len(base & candidate) >= Fraction(2, 3) * len(candidate):
                expanded |= candidate
        for g in expanded:
            v[p, g] = np.exp(-dist[p, g])
    v_qe = np.zeros_like(v)
    for p in range(n):
        neighbours = nearest(p, k2 - 1)
        v_qe[p] = sum(v[g] for g in neighbours) / len(neighbours)
    out = np.zeros((num_q, n - num_q))
    for i, j in itertools.product(range(num_q), range(n - num_q)):
        a, b = v_qe[i], v_qe[num_q + j]
        jaccard = 1 - np.sum(np.minimum(a, b)) / np.sum(np.maximum(a, b))
        out[i, j] = (1 - lambda_value) * jaccard + lambda_value * dist[i, num_q + j]
    return out


@pytest.mark.parametrize(
    "seed, k1, k2, lambda_value",
    [(0, 20, 6, 0.3), (1, 5, 3, 0.3), (2, 7, 1, 0.5), (3, 4, 5, 0.0)],
)
def test_correctness_against_the_set_loop(seed, k1, k2, lambda_value):
    rng = np.random.default_rng(seed)
    query = rng.normal(size=(10, 8)).astype(np.float32)
    gallery = rng.normal(size=(20, 8)).astype(np.float32)
    actual = retrieval.k_reciprocal_rerank(query, gallery, k1, k2, lambda_value)
    expected = reference_rerank(query, gallery, k1, k2, lambda_value)
    assert actual.shape == (10, 20)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


def test_blocks_match_one_block():
    rng = np.random.default_rng(4)
    q = retrieval.checks.check_embeddings(rng.normal(size=(9, 6)), "q")
    g = retrieval.checks.check_embeddings(rng.normal(size=(14, 6)), "g")
    whole = np.concatenate([b for *_, b in rerank.rerank_blocks(q, g, 6, 3, 0.3)])
    parts = np.concatenate(
        [b for *_, b in rerank.rerank_blocks(q, g, 6, 3, 0.3, block_rows=2)]
    )
    np.testing.assert_array_equal(parts, whole)


def test_lambda_one_is_the_original_squared_distance():
    rng = np.random.default_rng(5)
    q, g = rng.normal(size=(4, 5)), rng.normal(size=(7, 5))
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    out = retrieval.k_reciprocal_rerank(q, g, lambda_value=1.0)
    np.testing.assert_allclose(out, 2 - 2 * qn @ gn.T, atol=1e-6)


def _clusters(rng, num_ids=5, queries=2, gallery=4, dim=16, noise=0.05):
    centres = np.linalg.qr(rng.normal(size=(dim, num_ids)))[0].T
    q = np.repeat(centres, queries, 0) + noise * rng.normal(
        size=(num_ids * queries, dim)
    )
    g = np.repeat(centres, gallery, 0) + noise * rng.normal(
        size=(num_ids * gallery, dim)
    )
    q_ids = np.repeat(np.arange(1, num_ids + 1), queries)
    g_ids = np.repeat(np.arange(1, num_ids + 1), gallery)
    return q, q_ids, np.ones_like(q_ids), g, g_ids, 2 * np.ones_like(g_ids)


def test_well_separated_clusters_keep_perfect_map():
    """Every gallery image of a query's identity is nearer than any other, so
    its k-reciprocal sets hold only its own cluster (with k1 below the
    cluster size) and the Jaccard term keeps the order: mAP and R@1 are 1."""
    args = _clusters(np.random.default_rng(6))
    for k1, k2 in ((4, 3), (20, 6)):
        out = retrieval.reid_metrics(*args, rerank=True, rerank_k1=k1, rerank_k2=k2)
        assert out["mAP"] == 1.0 and out["cmc"][1] == 1.0, k1


def _planar(points, scale=0.1):
    """Points of a plane laid on the unit sphere near a pole (small angles)."""
    p = np.asarray(points, np.float64) * scale
    return np.concatenate([p, np.ones((len(p), 1))], axis=1)


def test_rerank_fixes_a_wrong_rank_1():
    """The query's nearest gallery image b1 belongs to a tight cluster of
    another identity (b1..b5 within 0.4 of b1, the query at 0.8): the query
    is not among b1's k1 = 4 nearest, so b1 is not k-reciprocal to it and
    their Jaccard distance is 1. Its own identity's images a1..a3, at 1.0,
    count the query among their 4 nearest: reciprocal, Jaccard distance
    well below 1. With lambda 0.3 and squared distances near 0.01 the
    Jaccard term decides: a1..a3 move ahead of b1."""
    query = _planar([[0.0, 0.0]])
    a = [[-1.0, 0.0], [-1.0, 0.1], [-1.0, -0.1]]
    b = [[0.8, 0.0], [1.2, 0.0], [1.2, 0.1], [1.2, -0.1], [1.25, 0.0]]
    gallery = _planar(a + b)
    ids = np.array([1, 1, 1, 2, 2, 2, 2, 2])
    args = (query, [1], [1], gallery, ids, np.full(8, 2))
    before = retrieval.reid_metrics(*args)
    after = retrieval.reid_metrics(*args, rerank=True, rerank_k1=4, rerank_k2=1)
    assert before["cmc"][1] == 0.0
    assert after["cmc"][1] == 1.0 and after["mAP"] == 1.0
    dist = retrieval.k_reciprocal_rerank(query, gallery, 4, 1, 0.3)
    assert np.argmin(dist[0]) in (0, 1, 2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k1": 0}, "`k1` must be a positive integer; got 0"),
        ({"k1": 2.5}, "`k1` must be a positive integer"),
        ({"k2": True}, "`k2` must be a positive integer"),
        ({"k1": 4, "k2": 6}, "`k2`.*at most `k1` \\+ 1 = 5"),
        ({"lambda_value": 1.5}, "`lambda_value` must be a number in \\[0, 1\\]"),
        ({"lambda_value": "0.3"}, "`lambda_value`"),
    ],
)
def test_bad_parameters_are_rejected(kwargs, match):
    x = np.eye(3, 4)
    with pytest.raises(ValueError, match=match):
        retrieval.k_reciprocal_rerank(x, x, **kwargs)


def test_result_above_the_size_limit_is_refused(monkeypatch):
    monkeypatch.setattr(rerank, "MAX_RESULT_ENTRIES", 11)
    x = np.random.default_rng(7).normal(size=(4, 3))
    with pytest.raises(ValueError, match="4 x 3 = 12 entries.*limit of 11"):
        retrieval.k_reciprocal_rerank(x, x[:3])
    assert retrieval.k_reciprocal_rerank(x[:3], x[:3]).shape == (3, 3)


def test_reid_metrics_rerank_option_is_checked():
    args = _clusters(np.random.default_rng(8))
    with pytest.raises(ValueError, match="`rerank` must be True or False"):
        retrieval.reid_metrics(*args, rerank="yes")
    with pytest.raises(ValueError, match="`rerank_k1` must be a positive integer"):
        retrieval.reid_metrics(*args, rerank=True, rerank_k1=0)
