"""Tests of keras_circle.search: the exact engine against NumPy, and EmbeddingIndex."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from keras_circle import search


def _data(rng, n=300, dim=16, classes=8):
    labels = rng.integers(0, classes, n)
    centres = rng.standard_normal((classes, dim))
    return centres[labels] + rng.standard_normal((n, dim)), labels


def _brute_top(q, r, k, exclude_self):
    sims = search.normalize_rows(q).astype(np.float64) @ search.normalize_rows(r).T
    if exclude_self:
        np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, axis=1), order


@pytest.mark.parametrize("exclude_self", [False, True])
def test_neighbours_match_brute_force_up_to_ties(rng, exclude_self):
    x, _ = _data(rng)
    u = search.normalize_rows(x)
    blocks = list(search.neighbours(u, u, 9, exclude_self=exclude_self, block_size=64))
    scores = np.concatenate([b[2] for b in blocks])
    ids = np.concatenate([b[3] for b in blocks])
    ref_scores, ref_ids = _brute_top(x, x, 9, exclude_self)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    # Where two neighbours differ, their brute-force scores are tied.
    sims = u.astype(np.float64) @ u.T
    differ = ids != ref_ids
    rows = np.nonzero(differ)[0]
    np.testing.assert_allclose(
        sims[rows, ids[differ]], sims[rows, ref_ids[differ]], atol=1e-5
    )
    if exclude_self:
        assert not (ids == np.arange(len(x))[:, None]).any()


def test_exact_duplicates_keep_lower_index_first_and_self_is_left_out():
    # Twelve copies of one vector: every k-th place is tied beyond k.
    x = np.ones((12, 4))
    u = search.normalize_rows(x)
    ((_, _, _, ids),) = search.neighbours(u, u, 3, exclude_self=True)
    expected = [[j for j in range(12) if j != i][:3] for i in range(12)]
    np.testing.assert_array_equal(ids, expected)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_index_add_search_lookup_save_load_roundtrip(rng, tmp_path, kind):
    x, labels = _data(rng, n=400)
    index = search.EmbeddingIndex(16, kind=kind, embedder="model-a", nlist=8, nprobe=8)
    index.add(x[:200], labels=labels[:200], ids=np.arange(1000, 1200))
    index.add(x[200:300] * 1e3, labels=labels[200:300], ids=np.arange(5, 105))
    scores, ids = index.search(x[300:], 5)
    assert scores.dtype == np.float32 and ids.dtype == np.int64
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    if kind == "flat":
        gallery_ids = np.concatenate([np.arange(1000, 1200), np.arange(5, 105)])
        ref_scores, ref_pos = _brute_top(x[300:], x[:300], 5, False)
        np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
        assert np.mean(ids == gallery_ids[ref_pos]) > 0.99
    _, ids2, neighbour_labels = index.lookup(x[300:], 5)
    np.testing.assert_array_equal(ids2, ids)
    by_id = dict(zip(index.ids.tolist(), index.labels.tolist(), strict=True))
    assert neighbour_labels.tolist() == [[by_id[i] for i in row] for row in ids]
    index.save(tmp_path / "ix")
    index.save(tmp_path / "ix")  # replacing a saved index
    meta = json.loads((tmp_path / "ix" / "metadata.json").read_text())
    assert (meta["dim"], meta["kind"], meta["count"], meta["embedder"]) == (
        16,
        kind,
        300,
        "model-a",
    )
    loaded = search.EmbeddingIndex.load(tmp_path / "ix", embedder="model-a")
    scores3, ids3 = loaded.search(x[300:], 5)
    np.testing.assert_array_equal(ids3, ids)
    np.testing.assert_allclose(scores3, scores, atol=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == ["ix"]  # no temporary left


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_embeddings_returns_the_unit_rows_in_insertion_order(rng, tmp_path, kind):
    x, _ = _data(rng, n=300)
    index = search.EmbeddingIndex(16, kind=kind, nlist=8, nprobe=8)
    assert index.embeddings().shape == (0, 16)
    index.add(x[:200], ids=np.arange(1000, 1200))
    index.add(x[200:] * 1e3, ids=np.arange(5, 105))
    rows = index.embeddings()
    assert rows.dtype == np.float32 and rows.shape == (300, 16)
    np.testing.assert_allclose(rows, search.normalize_rows(x), atol=1e-6)
    before = index.search(x[:20], 5)
    # Reading the rows leaves the index as it was: same answers, and it
    # still takes rows and saves (IVF: no direct map left behind).
    np.testing.assert_array_equal(index.search(x[:20], 5)[1], before[1])
    index.add(x[:10], ids=np.arange(-10, 0))
    index.save(tmp_path / "ix")
    loaded = search.EmbeddingIndex.load(tmp_path / "ix")
    np.testing.assert_array_equal(loaded.embeddings(), index.embeddings())
    assert loaded.embeddings().shape == (310, 16)


def test_query_of_another_dim_is_a_clear_error(rng):
    index = search.EmbeddingIndex(64)
    index.add(rng.standard_normal((10, 64)))
    with pytest.raises(ValueError, match=r"`queries` must have dim 64.*\(3, 32\)"):
        index.search(rng.standard_normal((3, 32)), 2)
    with pytest.raises(ValueError, match="`embeddings` must have dim 64"):
        index.add(rng.standard_normal((3, 32)))


def test_load_checks_the_metadata(rng, tmp_path):
    index = search.EmbeddingIndex(8, embedder="model-a")
    index.add(rng.standard_normal((20, 8)))
    index.save(tmp_path / "ix")
    with pytest.raises(ValueError, match="embedder 'model-a', not 'model-b'"):
        search.EmbeddingIndex.load(tmp_path / "ix", embedder="model-b")
    meta_path = tmp_path / "ix" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "count": 21, "dim": 9}))
    with pytest.raises(ValueError, match="does not match its metadata: dim 8"):
        search.EmbeddingIndex.load(tmp_path / "ix")
    with pytest.raises(ValueError, match="no metadata.json"):
        search.EmbeddingIndex.load(tmp_path / "missing")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(dim=0), "`dim` must be a positive integer"),
        (dict(dim=8, kind="lsh"), "`kind` must be one of"),
        (dict(dim=8, nprobe=0), "`nprobe` must be a positive integer"),
    ],
)
def test_bad_index_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        search.EmbeddingIndex(**kwargs)


def test_bad_rows_and_k_are_rejected(rng):
    index = search.EmbeddingIndex(4)
    with pytest.raises(ValueError, match="index is empty"):
        index.search(np.ones((1, 4)), 1)
    index.add(rng.standard_normal((5, 4)))
    with pytest.raises(ValueError, match="`queries` must be finite"):
        index.search(np.array([[1.0, np.nan, 0, 0]]), 1)
    with pytest.raises(ValueError, match="`k` must be a positive integer"):
        index.search(np.ones((1, 4)), 0)
    with pytest.raises(ValueError, match="`labels` must be given on every `add`"):
        index.add(np.ones((1, 4)), labels=[3])
    with pytest.raises(ValueError, match="`ids` must be unique"):
        index.add(np.ones((1, 4)), ids=[0])


def _ref_curve(distance, correct):
    """Precision and recall at each distinct distance, by explicit loops."""
    out = []
    for t in sorted(set(distance.tolist())):
        accepted = [c for d, c in zip(distance, correct, strict=True) if d <= t]
        right = sum(accepted)
        out.append((t, right / len(accepted), right / len(distance)))
    return out


def test_calibrate_and_match(rng):
    x, labels = _data(rng, n=600, classes=6)
    index = search.EmbeddingIndex(16)
    index.add(x[:300], labels=labels[:300])
    queries, query_labels = x[300:], labels[300:].copy()
    query_labels[:40] = 99  # a class the gallery does not hold
    out = index.calibrate(queries, query_labels)
    scores, _, nearest = index.lookup(queries, 1)
    distance = 1.0 - scores[:, 0].astype(np.float64)
    ref = _ref_curve(distance, nearest[:, 0] == query_labels)
    np.testing.assert_allclose(out["curve"]["thresholds"], [r[0] for r in ref])
    np.testing.assert_allclose(out["curve"]["precision"], [r[1] for r in ref])
    np.testing.assert_allclose(out["curve"]["recall"], [r[2] for r in ref])
    assert out["f1"] == pytest.approx(np.max(out["curve"]["f1"]))
    high = index.calibrate(queries, query_labels, target_precision=0.95)
    assert high["precision"] >= 0.95 and high["threshold"] <= out["threshold"]
    assert index.threshold == high["threshold"]
    matched = index.match(queries)
    accepted = distance <= high["threshold"]
    np.testing.assert_array_equal(matched[accepted], nearest[accepted, 0])
    assert np.all(matched[~accepted] == -1)
    assert (index.match(queries, threshold=-1.0) == -1).all()
    with pytest.raises(ValueError, match="No threshold reaches"):
        index.calibrate(queries[:40], query_labels[:40], target_precision=0.5)


def test_string_labels_match_unknown(rng):
    x, labels = _data(rng, n=50, classes=3)
    names = np.array(["cat", "dog", "eel"])[labels]
    index = search.EmbeddingIndex(16)
    index.add(x, labels=names)
    out = index.match(np.concatenate([x[:2], -x[:1] * 0 + 100.0]), threshold=1e-6)
    assert out.tolist()[:2] == names[:2].tolist() and out[2] == "unknown"


def test_search_runs_without_tensorflow_under_the_numpy_backend():
    """`import keras_circle` imports Keras (for the losses, which Keras finds
    in a `.keras` file only once their module ran); under KERAS_BACKEND=numpy
    that pulls in no TensorFlow, so a search service needs none."""
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        from keras_circle import search
        index = search.EmbeddingIndex(4)
        index.add(np.eye(4), labels=np.arange(4))
        scores, ids, labels = index.lookup(np.eye(4)[2:3] + 0.1, 1)
        assert ids.tolist() == [[2]] and labels.tolist() == [[2]], (ids, labels)
        print("tensorflow" in sys.modules)
        """
    )
    env = {**os.environ, "KERAS_BACKEND": "numpy"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["False"]
