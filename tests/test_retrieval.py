"""Tests of keras_circle.retrieval against brute-force references.

The references below build the full similarity matrix in float64, rank with
Python's `sorted` on `(-similarity, index)` and loop explicitly; they share
no code with the blockwise implementation.
"""

import math
import threading
import time
import tracemalloc

import numpy as np
import psutil
import pytest
from sklearn import metrics as sk_metrics

from keras_circle import retrieval


def _unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _ranking(sims_row, candidates):
    return sorted(candidates, key=lambda j: (-sims_row[j], j))


def _ref_recall(emb, labels, ks):
    sims = _unit(emb) @ _unit(emb).T
    n = len(labels)
    out = {}
    for k in ks:
        hits = 0
        for i in range(n):
            ranked = _ranking(sims[i], [j for j in range(n) if j != i])
            hits += any(labels[j] == labels[i] for j in ranked[:k])
        out[k] = hits / n
    return out


def _ref_map_at_r(emb, labels):
    sims = _unit(emb) @ _unit(emb).T
    n = len(labels)
    scores = []
    for i in range(n):
        r = sum(1 for j in range(n) if j != i and labels[j] == labels[i])
        if r == 0:
            continue
        ranked = _ranking(sims[i], [j for j in range(n) if j != i])[:r]
        correct, total = 0, 0.0
        for pos, j in enumerate(ranked, start=1):
            if labels[j] == labels[i]:
                correct += 1
                total += correct / pos
        scores.append(total / r)
    return sum(scores) / len(scores)


def _ref_reid(q, q_ids, q_cams, g, g_ids, g_cams, ranks):
    sims = _unit(q) @ _unit(g).T
    firsts, aps = [], []
    for i in range(len(q_ids)):
        kept = [
            j
            for j in range(len(g_ids))
            if g_ids[j] != -1 and not (g_ids[j] == q_ids[i] and g_cams[j] == q_cams[i])
        ]
        ranked = _ranking(sims[i], kept)
        good = [pos for pos, j in enumerate(ranked) if g_ids[j] == q_ids[i]]
        if not good:
            continue
        firsts.append(good[0])
        aps.append(np.mean([(n + 1) / (pos + 1) for n, pos in enumerate(good)]))
    cmc = {k: sum(f < k for f in firsts) / len(firsts) for k in ranks}
    return cmc, float(np.mean(aps)), firsts


def _clustered(rng, n, classes, dim=16, noise=0.8):
    labels = rng.integers(0, classes, n)
    centers = rng.standard_normal((classes, dim))
    return centers[labels] + noise * rng.standard_normal((n, dim)), labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_correctness_recall_map_precision(seed):
    rng = np.random.default_rng(seed)
    emb, labels = _clustered(rng, 150, 30)  # some classes have one sample
    ks = (1, 2, 4, 8, 16)
    assert retrieval.recall_at_k(emb, labels, ks) == pytest.approx(
        _ref_recall(emb, labels, ks), abs=1e-12
    )
    assert retrieval.map_at_r(emb, labels) == pytest.approx(
        _ref_map_at_r(emb, labels), abs=1e-12
    )
    assert retrieval.precision_at_1(emb, labels) == pytest.approx(
        _ref_recall(emb, labels, (1,))[1], abs=1e-12
    )


def test_block_size_matches_one_block(rng):
    emb, labels = _clustered(rng, 300, 20)
    ks = (1, 2, 4, 8)
    assert retrieval.recall_at_k(emb, labels, ks, block_size=7) == (
        retrieval.recall_at_k(emb, labels, ks, block_size=300)
    )
    assert retrieval.map_at_r(emb, labels, block_size=7) == pytest.approx(
        retrieval.map_at_r(emb, labels, block_size=300), abs=1e-12
    )
    args = _reid_data(rng)
    small = retrieval.reid_metrics(*args, block_size=7)
    one = retrieval.reid_metrics(*args, block_size=10_000)
    assert small["cmc"] == one["cmc"]
    assert small["mAP"] == pytest.approx(one["mAP"], abs=1e-12)
    a, b = rng.standard_normal((2, 100, 8))
    same = rng.random(100) < 0.5
    small = retrieval.verification_metrics(a, b, same, block_size=7)
    one = retrieval.verification_metrics(a, b, same)
    assert small["accuracy"] == one["accuracy"] and small["auc"] == one["auc"]


def test_ties_lower_index_first():
    # Exact ties: coordinates 0, 0.5 and 1 of unit vectors make every
    # product and sum exact, whatever order a BLAS kernel adds them in.
    tie, q, other = [0.5] * 4, [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]
    emb = np.array([q, tie, tie, tie, tie, tie])
    labels = np.array([0, 1, 1, 0, 0, 0])
    # Query 0: neighbours 1, 2 (label 1) rank before 3, 4, 5 (label 0).
    rec = retrieval.recall_at_k(emb, labels, ks=(1, 2, 3))
    ref = _ref_recall(emb, labels, (1, 2, 3))
    assert rec == ref
    assert retrieval.map_at_r(emb, labels) == pytest.approx(
        _ref_map_at_r(emb, labels), abs=1e-12
    )
    # Reversed labels flip the first neighbour of query 0 from miss to hit.
    first = retrieval.recall_at_k(emb, [0, 0, 1, 1, 1, 1], ks=(1,))[1]
    assert first == pytest.approx(_ref_recall(emb, [0, 0, 1, 1, 1, 1], (1,))[1])
    # A k-th place tied beyond k (the slow path of the top-k).
    emb = np.array([q] + [tie] * 9 + [other])
    labels = np.array([0] + [1] * 5 + [0] * 4 + [0])
    assert retrieval.recall_at_k(emb, labels, ks=(4, 5, 6), block_size=3) == (
        _ref_recall(emb, labels, (4, 5, 6))
    )
    # Reid: two identical gallery entries, the match has the higher index.
    g = np.array([tie, tie, other])
    out = retrieval.reid_metrics([q], [5], [0], g, [7, 5, 5], [1, 1, 1])
    assert out["cmc"] == {1: 0.0, 5: 1.0, 10: 1.0}
    assert out["mAP"] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_single_sample_classes():
    emb = np.array([[1.0, 0, 0], [0.9, 0.1, 0], [0, 1.0, 0], [0, 0, 1.0]])
    labels = [0, 0, 1, 2]
    # Samples 2 and 3 are alone in their class: misses for recall, left out
    # of MAP@R.
    assert retrieval.recall_at_k(emb, labels, ks=(3,)) == {3: 0.5}
    assert retrieval.map_at_r(emb, labels) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="single-sample"):
        retrieval.map_at_r(emb, [0, 1, 2, 3])


def test_k_clamped_to_set_size():
    # Sample 2 is tied between 0 and 1 and takes 0 (lower index): a miss.
    # K=100 becomes K=2: only sample 0, alone in its class, still misses.
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert retrieval.recall_at_k(emb, [0, 1, 1], ks=(1, 100)) == {1: 1 / 3, 100: 2 / 3}


def _reid_data(rng, num_ids=12, per_id=6, dim=8):
    ids = np.repeat(np.arange(1, num_ids + 1), per_id)
    cams = rng.integers(0, 3, ids.size)
    centers = rng.standard_normal((num_ids + 1, dim))
    emb = centers[ids] + rng.standard_normal((ids.size, dim))
    q_idx = np.arange(0, ids.size, 3)
    g_idx = np.setdiff1d(np.arange(ids.size), q_idx)
    g_ids, g_cams, g = ids[g_idx].copy(), cams[g_idx], emb[g_idx]
    g_ids[rng.random(g_ids.size) < 0.15] = -1  # junk
    g_ids[rng.random(g_ids.size) < 0.15] = 0  # distractors
    return emb[q_idx], ids[q_idx], cams[q_idx], g, g_ids, g_cams


@pytest.mark.parametrize("seed", [0, 1])
def test_reid_correctness(seed):
    args = _reid_data(np.random.default_rng(seed))
    out = retrieval.reid_metrics(*args, ranks=(1, 3, 5, 10))
    cmc, mean_ap, _ = _ref_reid(*args, ranks=(1, 3, 5, 10))
    assert out["cmc"] == pytest.approx(cmc, abs=1e-12)
    assert out["mAP"] == pytest.approx(mean_ap, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_reid_cmc_curve_matches_brute_force(seed):
    args = _reid_data(np.random.default_rng(seed))
    out = retrieval.reid_metrics(*args, curve=True)
    _, _, firsts = _ref_reid(*args, ranks=())
    num_gallery = int(np.sum(np.asarray(args[4]) != -1))
    expected = [np.mean([f < k for f in firsts]) for k in range(1, num_gallery + 1)]
    np.testing.assert_allclose(out["cmc_curve"], expected, atol=1e-12)
    assert out["cmc_curve"][-1] == 1.0  # every valid query matches by the end
    assert "cmc_curve" not in retrieval.reid_metrics(*args)


def test_reid_filtering_hand_made():
    """Query id 1 on camera 0 against a gallery, best-scoring first.

    Gallery (similarity order 0..5): same id same camera (removed), junk (-1,
    ignored), distractor 0 (a negative), same id other camera (first match,
    filtered rank 2), id 2 (negative), same id other camera (rank 4).
    AP = (1/2 + 2/4) / 2 = 0.5; CMC: first match at rank 2.
    """
    angles = np.linspace(0.0, 1.0, 6)
    g = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    g_ids, g_cams = [1, -1, 0, 1, 2, 1], [0, 1, 1, 1, 1, 2]
    out = retrieval.reid_metrics([[1.0, 0.0]], [1], [0], g, g_ids, g_cams, (1, 2))
    assert out == {"cmc": {1: 0.0, 2: 1.0}, "mAP": 0.5, "num_valid_queries": 1}
    # A second query whose only same-id image shares its camera is excluded.
    out = retrieval.reid_metrics(
        [[1.0, 0.0], [1.0, 0.0]], [1, 2], [0, 1], g, g_ids, g_cams, (1, 2)
    )
    assert out["num_valid_queries"] == 1 and out["mAP"] == 0.5
    with pytest.raises(ValueError, match="No query has a valid match"):
        retrieval.reid_metrics([[1.0, 0.0]], [2], [1], g, g_ids, g_cams)


def _ref_best_threshold(sims, same):
    values = sorted(set(sims.tolist()))
    cands = [values[0] - 1] + [
        (x + y) / 2 for x, y in zip(values, values[1:], strict=False)
    ]
    cands.append(values[-1] + 1)
    best, best_acc = None, -1.0
    for t in cands:
        acc = sum((s >= t) == y for s, y in zip(sims, same, strict=True)) / len(sims)
        if acc > best_acc:
            best, best_acc = t, acc
    return best


def _ref_verification(sims, same, fars, folds):
    bounds, start = [], 0
    for f in range(folds):
        size = len(sims) // folds + (1 if f < len(sims) % folds else 0)
        bounds.append((start, start + size))
        start += size
    accs = []
    for lo, hi in bounds:
        train = [i for i in range(len(sims)) if not lo <= i < hi]
        t = _ref_best_threshold(sims[train], same[train])
        accs.append(np.mean([(sims[i] >= t) == same[i] for i in range(lo, hi)]))
    pos, neg = sims[same], sims[~same]
    tars = {}
    for far in fars:
        for t in sorted(set(sims.tolist()) | {np.inf}):
            if np.sum(neg >= t) <= far * len(neg) + 1e-9:
                tars[far] = np.mean(pos >= t)
                break
    return accs, tars


def _quantised_pairs(rng, n):
    """Pairs whose cosine is a multiple of 1/64: exact ties, and the float32
    rounding of the implementation cannot reorder distinct scores."""
    same = rng.random(n) < 0.5
    c = np.clip(np.round((rng.normal(0.3, 0.3, n) + 0.4 * same) * 64) / 64, -1, 1)
    a = np.tile([1.0, 0.0], (n, 1))
    b = np.stack([c, np.sqrt(1 - c**2)], axis=1)
    return a, b, same, c


@pytest.mark.parametrize("n, folds", [(600, 10), (23, 10), (2000, 5)])
def test_verification_correctness(n, folds):
    rng = np.random.default_rng(n)
    a, b, same, sims = _quantised_pairs(rng, n)
    fars = (1e-1, 1e-2, 1e-3)
    out = retrieval.verification_metrics(a, b, same, fars=fars, folds=folds)
    accs, tars = _ref_verification(sims, same, fars, folds)
    np.testing.assert_allclose(out["fold_accuracies"], accs, atol=1e-12)
    assert out["accuracy"] == pytest.approx(np.mean(accs))
    assert out["accuracy_std"] == pytest.approx(np.std(accs))
    assert out["tar_at_far"] == pytest.approx(tars)
    fpr, tpr, thresholds = sk_metrics.roc_curve(same, sims, drop_intermediate=False)
    np.testing.assert_array_equal(out["roc"]["fpr"], fpr)
    np.testing.assert_array_equal(out["roc"]["tpr"], tpr)
    np.testing.assert_allclose(out["roc"]["thresholds"][1:], thresholds[1:], atol=1e-6)
    assert out["auc"] == pytest.approx(sk_metrics.roc_auc_score(same, sims))


def test_verification_far_below_resolution(rng):
    a, b = rng.standard_normal((2, 500, 8))
    same = rng.random(500) < 0.5
    out = retrieval.verification_metrics(a, b, same, fars=(1e-4,))
    sims = np.sum(_unit(a) * _unit(b), axis=1)
    # Fewer than 10,000 impostors: FAR 1e-4 means no false accept at all.
    assert out["tar_at_far"][1e-4] == pytest.approx(
        np.mean(sims[same] > sims[~same].max())
    )


def test_tensor_inputs():
    import keras

    emb, labels = _clustered(np.random.default_rng(3), 40, 5)
    expected = retrieval.recall_at_k(emb, labels)
    got = retrieval.recall_at_k(
        keras.ops.convert_to_tensor(emb), labels.astype("float32")
    )
    assert got == expected


def test_progress_bar(capsys, rng):
    emb, labels = _clustered(rng, 60, 5)
    retrieval.recall_at_k(emb, labels, block_size=10, verbose=1)
    assert "6/6" in capsys.readouterr().out
    retrieval.recall_at_k(emb, labels, block_size=10, verbose=0)
    assert capsys.readouterr().out == ""


_E = np.ones((4, 3))
_L = [0, 0, 1, 1]


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: retrieval.recall_at_k(_E, [0, 1, 2]),
            r"`labels` must have shape \(4,\)",
        ),
        (lambda: retrieval.recall_at_k(_E[0], _L), "`embeddings` must be 2-D"),
        (lambda: retrieval.recall_at_k(np.ones((1, 3)), [0]), "at least 2 row"),
        (lambda: retrieval.recall_at_k(np.ones((0, 3)), []), "at least 2 row"),
        (lambda: retrieval.map_at_r(_E * np.nan, _L), "must be finite"),
        (lambda: retrieval.recall_at_k(_E, [0, 0.5, 1, 1]), "got 0.5 at index 1"),
        (lambda: retrieval.recall_at_k(_E, ["a", "b", "c", "d"]), "must hold integers"),
        (lambda: retrieval.recall_at_k(_E, _L, ks=(0, 1)), "`ks` must be positive"),
        (lambda: retrieval.recall_at_k(_E, _L, ks=(1.5,)), "`ks` must be positive"),
        (
            lambda: retrieval.reid_metrics(_E, _L, _L, np.ones((4, 2)), _L, _L),
            "same dim; got 3 and 2",
        ),
        (
            lambda: retrieval.reid_metrics(_E, _L, [0, 0], _E, _L, _L),
            "`query_cams` must have shape",
        ),
        (
            lambda: retrieval.reid_metrics(np.ones((0, 3)), [], [], _E, _L, _L),
            "`query_embeddings` must have at least 1",
        ),
        (
            lambda: retrieval.verification_metrics(_E, _E[:3], [1, 0, 1, 0]),
            "same shape",
        ),
        (
            lambda: retrieval.verification_metrics(_E, _E, [1, 0, 2, 0], folds=2),
            "bool or 0/1",
        ),
        (
            lambda: retrieval.verification_metrics(_E, _E, [1, 1, 1, 1], folds=2),
            "both genuine and impostor",
        ),
        (lambda: retrieval.verification_metrics(_E, _E, [1, 0, 1, 0]), "`folds`"),
        (
            lambda: retrieval.verification_metrics(
                _E, _E, [1, 0, 1, 0], fars=(2,), folds=2
            ),
            "`fars`",
        ),
    ],
)
def test_bad_inputs(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.slow
def test_memory_30k_gallery():
    """30,000 x 128: an N x N float32 matrix alone would be 3.6 GB."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(600), 50)
    emb = (rng.standard_normal((600, 128)) * 0.5)[labels].astype(np.float32)
    emb += rng.standard_normal(emb.shape, dtype=np.float32)
    process = psutil.Process()
    peak, done = [process.memory_info().rss], threading.Event()

    def sample():
        while not done.is_set():
            peak.append(process.memory_info().rss)
            time.sleep(0.005)

    thread = threading.Thread(target=sample)
    baseline = peak[0]
    tracemalloc.start()
    thread.start()
    try:
        start = time.perf_counter()
        recall = retrieval.recall_at_k(emb, labels, verbose=0)
        mean_ap = retrieval.map_at_r(emb, labels, verbose=0)
        seconds = time.perf_counter() - start
    finally:
        done.set()
        thread.join()
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    rss_increase = max(peak) - baseline
    assert rss_increase < 1 * 2**30, rss_increase
    assert traced_peak < 1 * 2**30, traced_peak
    assert 0 < mean_ap <= recall[1] <= recall[8] <= 1
    assert math.isfinite(seconds)


_BLOCK_SIZE_CALLS = {
    "recall_at_k": lambda b: retrieval.recall_at_k(_E, _L, block_size=b),
    "precision_at_1": lambda b: retrieval.precision_at_1(_E, _L, block_size=b),
    "map_at_r": lambda b: retrieval.map_at_r(_E, _L, block_size=b),
    "reid_metrics": lambda b: retrieval.reid_metrics(
        _E, [1, 1, 2, 2], [0, 0, 0, 0], _E, [1, 1, 2, 2], [1, 1, 1, 1], block_size=b
    ),
    "verification_metrics": lambda b: retrieval.verification_metrics(
        _E, _E, [1, 0, 1, 0], folds=2, block_size=b
    ),
}


@pytest.mark.parametrize("metric", sorted(_BLOCK_SIZE_CALLS))
@pytest.mark.parametrize("block_size", [-1, 0, 2.5, True, "8"])
def test_bad_block_size_is_rejected(metric, block_size):
    with pytest.raises(ValueError, match=rf"`block_size` must be .*got {block_size!r}"):
        _BLOCK_SIZE_CALLS[metric](block_size)


@pytest.mark.parametrize("scale", [1e30, 1e-30, 1e300, 1e-300])
def test_metrics_ignore_the_scale_of_embeddings(scale, rng):
    emb, labels = _clustered(rng, 80, 6)
    big = emb * scale  # float64: 1e300 is beyond float32, 1e-300 below it
    if abs(np.log10(scale)) < 38:
        big = big.astype(np.float32)  # float32 squares overflow / underflow
    ks = (1, 2, 4)
    assert retrieval.recall_at_k(big, labels, ks) == retrieval.recall_at_k(
        emb, labels, ks
    )
    assert retrieval.map_at_r(big, labels) == pytest.approx(
        retrieval.map_at_r(emb, labels), abs=1e-12
    )
    args = _reid_data(rng)
    scaled = (args[0] * scale, *args[1:3], args[3] * scale, *args[4:])
    assert retrieval.reid_metrics(*scaled) == retrieval.reid_metrics(*args)
    a, b = rng.standard_normal((2, 60, 8))
    same = np.arange(60) % 2 == 0
    out = retrieval.verification_metrics(a * scale, b * scale, same, folds=2)
    assert (
        out["accuracy"]
        == retrieval.verification_metrics(a, b, same, folds=2)["accuracy"]
    )


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_embeddings_are_rejected_by_name(bad):
    emb = np.ones((4, 3))
    emb[2, 1] = bad
    with pytest.raises(ValueError, match="`embeddings` must be finite.*row 2"):
        retrieval.recall_at_k(emb, _L)
    with pytest.raises(ValueError, match="`gallery_embeddings` must be finite"):
        retrieval.reid_metrics(_E, _L, _L, emb, _L, _L)
    with pytest.raises(ValueError, match="`embeddings_b` must be finite"):
        retrieval.verification_metrics(_E, emb, [1, 0, 1, 0], folds=2)


def _ref_query_reference(q, q_labels, r, r_labels, ks):
    """Recall@K, MAP@R and R-precision of queries against a separate reference."""
    sims = _unit(q) @ _unit(r).T
    recall = {k: 0.0 for k in ks}
    aps, rps = [], []
    for i in range(len(q_labels)):
        ranked = _ranking(sims[i], list(range(len(r_labels))))
        for k in ks:
            recall[k] += any(r_labels[j] == q_labels[i] for j in ranked[:k]) / len(q)
        big_r = sum(1 for lab in r_labels if lab == q_labels[i])
        if big_r == 0:
            continue
        rel = [r_labels[j] == q_labels[i] for j in ranked[:big_r]]
        correct, total = 0, 0.0
        for pos, hit in enumerate(rel, start=1):
            if hit:
                correct += 1
                total += correct / pos
        aps.append(total / big_r)
        rps.append(sum(rel) / big_r)
    return recall, float(np.mean(aps)), float(np.mean(rps))


@pytest.mark.parametrize("seed", [0, 1])
def test_query_and_reference_sets_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    emb, labels = _clustered(rng, 200, 12)
    q, q_labels, r, r_labels = emb[:60], labels[:60].copy(), emb[60:], labels[60:]
    q_labels[:3] = 99  # not in the reference: misses, left out of MAP@R
    ks = (1, 2, 4, 8, 300)
    kw = dict(reference=r, reference_labels=r_labels)
    recall, mean_ap, rp = _ref_query_reference(q, q_labels, r, r_labels, ks)
    assert retrieval.recall_at_k(q, q_labels, ks, **kw) == pytest.approx(
        recall, abs=1e-12
    )
    assert retrieval.map_at_r(q, q_labels, **kw) == pytest.approx(mean_ap, abs=1e-12)
    assert retrieval.r_precision(q, q_labels, **kw) == pytest.approx(rp, abs=1e-12)
    assert retrieval.precision_at_1(q, q_labels, **kw) == pytest.approx(recall[1])


def _ref_r_precision(emb, labels):
    sims = _unit(emb) @ _unit(emb).T
    n, out = len(labels), []
    for i in range(n):
        big_r = sum(1 for j in range(n) if j != i and labels[j] == labels[i])
        if big_r:
            ranked = _ranking(sims[i], [j for j in range(n) if j != i])[:big_r]
            out.append(sum(labels[j] == labels[i] for j in ranked) / big_r)
    return float(np.mean(out))


def test_r_precision_leave_one_out_matches_brute_force(rng):
    emb, labels = _clustered(rng, 150, 20)
    assert retrieval.r_precision(emb, labels, block_size=16) == pytest.approx(
        _ref_r_precision(emb, labels), abs=1e-12
    )


def test_per_class_results_average_each_class_queries(rng):
    emb, labels = _clustered(rng, 120, 5)
    labels[0] = 77  # a single-sample class: a recall miss, no MAP@R
    per = retrieval.recall_at_k(emb, labels, (1, 4), per_class=True)
    ref = {}
    hits = {k: _ref_hits(emb, labels, k) for k in (1, 4)}
    for c in np.unique(labels):
        ref[int(c)] = {k: float(np.mean(hits[k][labels == c])) for k in (1, 4)}
    assert sorted(per) == sorted(ref)
    for c in ref:
        assert per[c] == pytest.approx(ref[c], abs=1e-12)
    map_per = retrieval.map_at_r(emb, labels, per_class=True)
    assert 77 not in map_per and sorted(map_per) == sorted(set(labels.tolist()) - {77})
    p1 = retrieval.precision_at_1(emb, labels, per_class=True)
    assert p1 == pytest.approx({c: v[1] for c, v in per.items()})


def _ref_hits(emb, labels, k):
    sims = _unit(emb) @ _unit(emb).T
    n = len(labels)
    return np.array(
        [
            any(
                labels[j] == labels[i]
                for j in _ranking(sims[i], [j for j in range(n) if j != i])[:k]
            )
            for i in range(n)
        ]
    )


def test_clustering_scores_match_scikit_learn(rng):
    from sklearn.cluster import KMeans

    # Separated classes: k-means finds them, NMI = AMI = 1.
    emb, labels = _clustered(rng, 300, 6, noise=0.05)
    out = retrieval.clustering_scores(emb, labels)
    assert out["NMI"] == pytest.approx(1.0) and out["AMI"] == pytest.approx(1.0)
    # Overlapping classes: the scores are scikit-learn's on the same clusters,
    # and close to those of scikit-learn's own k-means.
    emb, labels = _clustered(rng, 400, 8, noise=1.2)
    out = retrieval.clustering_scores(emb, labels)
    assert out["NMI"] == pytest.approx(
        sk_metrics.normalized_mutual_info_score(labels, out["clusters"])
    )
    assert out["AMI"] == pytest.approx(
        sk_metrics.adjusted_mutual_info_score(labels, out["clusters"])
    )
    sk = KMeans(8, n_init=4, random_state=0).fit_predict(_unit(emb))
    assert out["NMI"] == pytest.approx(
        sk_metrics.normalized_mutual_info_score(labels, sk), abs=0.1
    )
    with pytest.raises(ValueError, match="`num_clusters` must be an integer"):
        retrieval.clustering_scores(emb, labels, num_clusters=0)


def test_reference_arguments_are_checked():
    with pytest.raises(ValueError, match="`reference_labels` is required"):
        retrieval.recall_at_k(_E, _L, reference=_E)
    with pytest.raises(ValueError, match="without `reference`"):
        retrieval.map_at_r(_E, _L, reference_labels=_L)
    with pytest.raises(ValueError, match="same dim; got 3 and 2"):
        retrieval.r_precision(_E, _L, reference=np.ones((4, 2)), reference_labels=_L)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reid_many_exact_ties_match_brute_force(seed):
    # Basis-vector queries: each similarity is one coordinate, exact
    # whatever the BLAS order, and the gallery repeats a few rows, so matches
    # tie with each other and with non-matches (lower index first).
    rng = np.random.default_rng(seed)
    rows = np.array(
        [[0.5, 0.5, 0.5, 0.5], [1, 0, 0, 0], [0, 1, 0, 0], [0.5, 0, 0.5, 0]]
    )
    g = rows[rng.integers(0, 4, 60)]
    g_ids, g_cams = rng.integers(1, 5, 60), rng.integers(0, 3, 60)
    g_ids[rng.random(60) < 0.1] = -1
    q = np.eye(4)[rng.integers(0, 4, 10)]
    q_ids, q_cams = rng.integers(1, 5, 10), rng.integers(0, 3, 10)
    args = (q, q_ids, q_cams, g, g_ids, g_cams)
    out = retrieval.reid_metrics(*args, ranks=(1, 2, 5, 20))
    cmc, mean_ap, _ = _ref_reid(*args, ranks=(1, 2, 5, 20))
    assert out["cmc"] == pytest.approx(cmc, abs=1e-12)
    assert out["mAP"] == pytest.approx(mean_ap, abs=1e-12)


def test_reid_counts_in_chunks_when_matches_are_many(monkeypatch):
    """A small comparison budget splits each query's matches into chunks."""
    from keras_circle.retrieval import reid

    args = _reid_data(np.random.default_rng(3))
    whole = retrieval.reid_metrics(*args, ranks=(1, 3, 5))
    monkeypatch.setattr(reid, "_COUNT_BUDGET", 7)
    chunked = retrieval.reid_metrics(*args, ranks=(1, 3, 5))
    cmc, mean_ap, _ = _ref_reid(*args, ranks=(1, 3, 5))
    assert chunked["cmc"] == whole["cmc"] == pytest.approx(cmc, abs=1e-12)
    assert chunked["mAP"] == pytest.approx(mean_ap, abs=1e-12)
