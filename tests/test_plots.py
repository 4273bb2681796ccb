"""Tests of keras_circle.plots: every plot writes a PNG that reads back."""

import matplotlib.image
import numpy as np
import pytest

from keras_circle import plots
from keras_circle import retrieval

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == _PNG_SIGNATURE and len(data) > 1000
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    # Not a blank canvas.
    assert image[..., :3].std() > 0.01


def _batch(rng, n=120, classes=6, dim=16):
    labels = rng.integers(0, classes, n)
    centers = rng.standard_normal((classes, dim))
    return centers[labels] + 0.7 * rng.standard_normal((n, dim)), labels


def test_plot_recall_at_k(tmp_path, rng):
    emb, labels = _batch(rng)
    results = {
        "trained": retrieval.recall_at_k(emb, labels),
        "random": retrieval.recall_at_k(rng.standard_normal(emb.shape), labels),
    }
    path = plots.plot_recall_at_k(results, tmp_path / "sub" / "recall.png")
    assert path == str(tmp_path / "sub" / "recall.png")
    _assert_png(path)
    _assert_png(plots.plot_recall_at_k(results["trained"], tmp_path / "one.png"))
    with pytest.raises(ValueError, match="`results` must be"):
        plots.plot_recall_at_k({}, tmp_path / "bad.png")


@pytest.mark.parametrize("mode", ["mean", "hardest"])
def test_pair_similarities(rng, mode):
    emb, labels = _batch(rng, n=50)
    labels[0] = 99  # an anchor without a positive is dropped
    s_p, s_n = plots.pair_similarities(emb, labels, mode=mode)
    assert s_p.shape == s_n.shape == (49,)
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sims = x @ x.T
    pos = [j for j in range(50) if labels[j] == labels[1] and j != 1]
    neg = [j for j in range(50) if labels[j] != labels[1]]
    if mode == "mean":
        expected = (sims[1, pos].mean(), sims[1, neg].mean())
    else:
        expected = (sims[1, pos].min(), sims[1, neg].max())
    assert (s_p[0], s_n[0]) == pytest.approx(expected, abs=1e-5)
    with pytest.raises(ValueError, match="`mode`"):
        plots.pair_similarities(emb, labels, mode="median")


def test_pair_similarities_max_pairs(rng):
    """Every anchor is valid here, so `max_pairs` sampled anchors give as many points."""
    emb, labels = _batch(rng, n=50)
    s_p_all, s_n_all = plots.pair_similarities(emb, labels)
    assert s_p_all.shape == (50,)
    s_p, s_n = plots.pair_similarities(emb, labels, max_pairs=10)
    assert s_p.shape == s_n.shape == (10,)
    # The points are those of 10 distinct anchors of the full set.
    rows = [int(np.abs(s_p_all - v).argmin()) for v in s_p]
    assert len(set(rows)) == 10
    np.testing.assert_allclose(s_p, s_p_all[rows], atol=1e-6)
    np.testing.assert_allclose(s_n, s_n_all[rows], atol=1e-6)


def test_plot_circle_boundary(tmp_path, rng):
    emb, labels = _batch(rng)
    before = plots.pair_similarities(rng.standard_normal(emb.shape), labels)
    after = plots.pair_similarities(emb, labels)
    _assert_png(plots.plot_circle_boundary(*after, tmp_path / "one.png", margin=0.4))
    path = plots.plot_circle_boundary(
        {"before": before, "after": after}, tmp_path / "two.png", margin=0.25
    )
    _assert_png(path)
    _assert_png(plots.plot_circle_boundary({"a": after}, path=tmp_path / "kw.png"))
    with pytest.raises(ValueError, match="same length"):
        plots.plot_circle_boundary([0.5, 0.6], [0.1], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="`path` is required"):
        plots.plot_circle_boundary(*after)


def test_plot_similarity_histograms(tmp_path, rng):
    emb, labels = _batch(rng)
    _assert_png(plots.plot_similarity_histograms(emb, labels, tmp_path / "all.png"))
    # Sampled: 120 samples have 7,140 pairs, more than the budget.
    _assert_png(
        plots.plot_similarity_histograms(
            emb, labels, tmp_path / "sampled.png", max_pairs=1000, margin=0.25
        )
    )


def test_sample_pairs_are_valid(rng):
    labels = rng.integers(0, 30, 400)
    labels[:3] = [1000, 1001, 1002]  # singletons are never positive anchors
    (pi, pj), (ni, nj) = plots.sample_pairs(labels, 2000, rng)
    assert pi.size == 1000 and ni.size == 1000
    assert np.all(labels[pi] == labels[pj]) and np.all(pi != pj)
    assert np.all(labels[ni] != labels[nj])


def test_plot_roc(tmp_path, rng):
    a, b = rng.standard_normal((2, 2000, 8))
    same = rng.random(2000) < 0.5
    b[same] = a[same] + 0.8 * b[same]
    out = retrieval.verification_metrics(a, b, same, fars=(1e-2, 1e-3))
    path = plots.plot_roc(
        out["roc"]["fpr"],
        out["roc"]["tpr"],
        tmp_path / "roc.png",
        fars=(1e-2, 1e-3),
        auc=out["auc"],
    )
    _assert_png(path)
    with pytest.raises(ValueError, match="same length"):
        plots.plot_roc([0, 1], [0, 0.5, 1], tmp_path / "bad.png")


def test_plot_loss_curve_leaves_gaps_and_rejects_bad_losses(tmp_path):
    _assert_png(plots.plot_loss_curve([2.3, None, 1.1, 0.7], tmp_path / "loss.png"))
    for bad in ([], [None], ["high"], [[1.0, 2.0]]):
        with pytest.raises(ValueError, match="`losses`"):
            plots.plot_loss_curve(bad, tmp_path / "bad.png")


def test_recall_axis_is_fitted_to_the_values():
    high = {1: 0.92, 2: 0.95, 4: 0.97, 8: 0.98}
    axes = plots.recall_at_k_figure({"a": high, "b": {1: 0.9, 8: 0.99}}).axes[0]
    low_limit, high_limit = axes.get_ylim()
    assert 80 < low_limit < 90 and 99 < high_limit <= 105
    assert [t.get_text() for t in axes.get_xticklabels()] == ["1", "2", "4", "8"]
    assert axes.get_ylabel() == "Recall@K (%)" and axes.get_xlabel().startswith("K")
    # Every value is labelled on the plot.
    assert {"92.0", "98.0", "99.0"} <= {t.get_text() for t in axes.texts}
    low = plots.recall_at_k_figure({1: 0.05, 2: 0.1, 4: 0.2}).axes[0]
    assert 0.0 <= low.get_ylim()[0] < 5 and 20 < low.get_ylim()[1] < 30


def test_cmc_figure_draws_the_curve_on_fitted_axes(rng):
    g = rng.standard_normal((30, 8))
    q = g + 0.6 * rng.standard_normal((30, 8))  # rank-1 far above 0%
    ids = np.arange(30)
    out = retrieval.reid_metrics(q, ids, [1] * 30, g, ids, [2] * 30, curve=True)
    axes = plots.cmc_figure(out["cmc_curve"], max_rank=20).axes[0]
    (line,) = axes.get_lines()
    np.testing.assert_array_equal(line.get_xdata(), np.arange(1, 21))
    np.testing.assert_allclose(line.get_ydata(), 100 * out["cmc_curve"][:20])
    assert axes.get_xlabel() == "rank k" and "%" in axes.get_ylabel()
    low, high = axes.get_ylim()
    assert low <= 100 * out["cmc_curve"][0] and high >= 100 * out["cmc_curve"][19]
    assert low > 10  # fitted to the curve, not 0-100%
    assert any(t.get_text().startswith("R-1:") for t in axes.texts)
    with pytest.raises(ValueError, match="`cmc_curve`"):
        plots.cmc_figure([])
    with pytest.raises(ValueError, match="`max_rank`"):
        plots.cmc_figure([0.5, 1.0], max_rank=0)


def test_plot_cmc_writes_a_png(tmp_path):
    _assert_png(plots.plot_cmc(np.linspace(0.3, 1.0, 80), tmp_path / "cmc.png"))


def test_histograms_span_the_similarities_there_are(rng):
    # Every pair's cosine lies in about [0.6, 1]: one direction plus noise.
    emb = np.ones((60, 16)) + 0.25 * rng.standard_normal((60, 16))
    labels = np.arange(60) % 4
    sims = (emb / np.linalg.norm(emb, axis=1, keepdims=True)) @ (
        emb / np.linalg.norm(emb, axis=1, keepdims=True)
    ).T
    axes = plots.similarity_histograms_figure(emb, labels, margin=0.1).axes[0]
    low, high = axes.get_xlim()
    assert sims.min() - 0.05 <= low <= sims.min() and high >= sims.max() - 1e-6
    assert low > 0.3  # not the fixed [-1, 1]
    legend = [t.get_text() for t in axes.get_legend().get_texts()]
    # 1 - m = 0.9 falls among the data and is drawn; m = 0.1 is off the range.
    assert "1 - m = 0.9" in legend and "m = 0.1" not in legend


def test_loss_curve_x_axis_counts_steps_or_epochs():
    axes = plots.loss_curve_figure([2.0, 1.5, 1.2], steps_per_round=5).axes[0]
    np.testing.assert_array_equal(axes.get_lines()[0].get_xdata(), [5, 10, 15])
    assert axes.get_xlabel() == "training step" and "loss" in axes.get_ylabel()
    axes = plots.loss_curve_figure([2.0, 1.5]).axes[0]
    np.testing.assert_array_equal(axes.get_lines()[0].get_xdata(), [1, 2])
    assert axes.get_xlabel() == "epoch"
    with pytest.raises(ValueError, match="`steps_per_round`"):
        plots.loss_curve_figure([1.0], steps_per_round=0)


def test_plot_similarity_trajectory_draws_the_history(tmp_path):
    """The points are the history's (mean_s_n, mean_s_p), epochs in order; an
    epoch without a value is left out; validation points are drawn too."""
    history = {
        "loss": [3.0, 2.0, 1.5, 1.0],
        "mean_s_p": [0.2, 0.5, None, 0.8],
        "mean_s_n": [0.3, 0.2, 0.1, 0.05],
        "val_mean_s_p": [0.1, 0.4, 0.6, 0.7],
        "val_mean_s_n": [0.3, 0.2, 0.2, 0.1],
    }
    path, points = plots.plot_similarity_trajectory(
        history, tmp_path / "trajectory.png", margin=0.25
    )
    _assert_png(path)
    np.testing.assert_array_equal(points, [[0.3, 0.2], [0.2, 0.5], [0.05, 0.8]])
    # Another history draws another picture.
    history["mean_s_p"] = [0.9, 0.9, 0.9, 0.9]
    other, _ = plots.plot_similarity_trajectory(history, tmp_path / "other.png")
    assert open(other, "rb").read() != open(path, "rb").read()


def test_plot_similarity_trajectory_takes_a_keras_history(tmp_path):
    class History:
        history = {"mean_s_p": [0.5], "mean_s_n": [0.1]}

    _, points = plots.plot_similarity_trajectory(History(), tmp_path / "t.png")
    np.testing.assert_array_equal(points, [[0.1, 0.5]])


def test_plot_similarity_trajectory_without_the_statistics_says_how(tmp_path):
    with pytest.raises(ValueError, match="circle_statistics"):
        plots.plot_similarity_trajectory({"loss": [1.0]}, tmp_path / "t.png")
    with pytest.raises(ValueError, match="no epoch with finite"):
        plots.plot_similarity_trajectory(
            {"mean_s_p": [None], "mean_s_n": [0.1]}, tmp_path / "t.png"
        )
