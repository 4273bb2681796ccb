"""Evaluation curves, each written to a PNG file: Recall@K, CMC, ROC, loss.

Every `plot_*` function writes its figure; the `*_figure` function beside
it returns the `matplotlib.figure.Figure` (axes, limits and labels can be
checked or restyled before saving). Axes are fitted to the values, so a
model at 92-98% is not drawn as a flat line at the top of a 0-100% axis.
`keras_circle.plots` re-exports them with the pair-similarity plots.
"""

import numbers

import numpy as np

from keras_circle.figures import fitted_limits
from keras_circle.figures import new_axes
from keras_circle.figures import save_figure


def recall_at_k_figure(results, *, title="Recall@K"):
    """The `matplotlib.figure.Figure` that `plot_recall_at_k` writes.

    The recall axis is fitted to the values (a model at 92-98% is not drawn
    as a flat line at the top of a 0-100% axis); each point is labelled
    with its value, and the K axis is log2 with a tick at every K.
    """
    if results and all(isinstance(k, numbers.Integral) for k in results):
        results = {"model": results}
    if not results or not all(isinstance(v, dict) and v for v in results.values()):
        raise ValueError(
            "`results` must be `{name: {k: recall}}` or `{k: recall}`; "
            f"got {results!r}."
        )
    figure, axes = new_axes()
    all_ks, all_values = set(), []
    for name, curve in results.items():
        ks = sorted(curve)
        all_ks.update(ks)
        values = [100 * curve[k] for k in ks]
        all_values += values
        axes.plot(ks, values, marker="o", label=str(name))
        for k, v in zip(ks, values, strict=True):
            axes.annotate(
                f"{v:.1f}",
                (k, v),
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
                fontsize=8,
            )
    ks = sorted(all_ks)
    axes.set_xscale("log", base=2)
    axes.set_xticks(ks, [str(k) for k in ks])
    axes.set_xlim(ks[0] / 1.4, ks[-1] * 1.4)
    axes.set_xlabel("K (nearest neighbours retrieved)")
    axes.set_ylabel("Recall@K (%)")
    axes.set_ylim(*fitted_limits(min(all_values), max(all_values), room=3.0))
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    axes.set_title(title)
    return figure


def plot_recall_at_k(results, path, *, title="Recall@K"):
    """Plots Recall@K curves of one or several models on one figure.

    Args:
        results: `{name: {k: recall}}` to compare models, or one `{k: recall}`
            as returned by `keras_circle.retrieval.recall_at_k`. Recalls in
            `[0, 1]`, shown as percentages on a log2 K axis, the percentage
            axis fitted to the values.
        path: Where to write the PNG.
        title: Figure title. Defaults to `"Recall@K"`.

    Returns:
        `path` as a string.

    Example:

    >>> keras_circle.plots.plot_recall_at_k(
    ...     {"circle": {1: 0.66, 2: 0.77, 4: 0.85, 8: 0.91}}, "recall.png")
    'recall.png'
    """
    return save_figure(recall_at_k_figure(results, title=title), path)


def cmc_figure(cmc_curve, *, max_rank=50, title="CMC"):
    """The `matplotlib.figure.Figure` that `plot_cmc` writes."""
    curve = 100 * np.asarray(cmc_curve, np.float64).ravel()
    if curve.size == 0 or not np.isfinite(curve).all():
        raise ValueError(
            "`cmc_curve` must be a non-empty sequence of rates in [0, 1] (the "
            f"`cmc_curve` of `reid_metrics(..., curve=True)`); got {cmc_curve!r}."
        )
    if isinstance(max_rank, bool) or not isinstance(max_rank, int) or max_rank < 1:
        raise ValueError(f"`max_rank` must be a positive integer; got {max_rank!r}.")
    curve = curve[:max_rank]
    ranks = np.arange(1, curve.size + 1)
    figure, axes = new_axes()
    axes.plot(ranks, curve, marker="." if curve.size > 20 else "o", ms=4)
    for k in (1, 5, 10, 20):
        if k <= curve.size:
            axes.annotate(
                f"R-{k}: {curve[k - 1]:.1f}",
                (k, curve[k - 1]),
                textcoords="offset points",
                xytext=(4, -12),
                fontsize=8,
            )
    axes.set_xlim(0.5, curve.size + 0.5)
    axes.set_ylim(*fitted_limits(curve.min(), curve.max(), room=2.0))
    axes.set_xlabel("rank k")
    axes.set_ylabel("queries matched within the top k (%)")
    axes.grid(alpha=0.3)
    axes.set_title(title)
    return figure


def plot_cmc(cmc_curve, path, *, max_rank=50, title="CMC"):
    """Plots a re-ID cumulative match characteristic (CMC) curve.

    Rank-k on the x axis (1 to `max_rank`), the percentage of queries whose
    first correct match is within the top k on the y axis, fitted to the
    curve; ranks 1, 5, 10 and 20 are labelled with their values.

    Args:
        cmc_curve: Rank-k rates for k = 1, 2, ..., as returned in
            `"cmc_curve"` by `keras_circle.retrieval.reid_metrics(...,
            curve=True)`.
        path: Where to write the PNG.
        max_rank: Last rank drawn. Defaults to `50`.
        title: Figure title. Defaults to `"CMC"`.

    Returns:
        `path` as a string.
    """
    return save_figure(cmc_figure(cmc_curve, max_rank=max_rank, title=title), path)


def plot_roc(fpr, tpr, path, fars=(1e-3, 1e-4), *, auc=None, title="ROC"):
    """Plots a verification ROC curve on a log false-accept axis.

    Marks the true-accept rate at each FAR (the best TPR with FPR <= FAR),
    as reported for IJB-B/C. Pass the `roc` of
    `keras_circle.retrieval.verification_metrics`.

    Args:
        fpr: False-accept rates, rising.
        tpr: True-accept rates, same length.
        path: Where to write the PNG.
        fars: FARs to mark. Defaults to `(1e-3, 1e-4)`.
        auc: Area under the curve to show in the legend, or `None`. Defaults
            to `None`.
        title: Figure title. Defaults to `"ROC"`.

    Returns:
        `path` as a string.
    """
    fpr, tpr = np.asarray(fpr, np.float64).ravel(), np.asarray(tpr, np.float64).ravel()
    if fpr.shape != tpr.shape or fpr.size < 2:
        raise ValueError(
            "`fpr` and `tpr` must have the same length, at least 2; got "
            f"{fpr.size} and {tpr.size}."
        )
    figure, axes = new_axes()
    positive = fpr > 0
    floor = fpr[positive].min() if positive.any() else 1e-6
    floor = min([floor, *fars]) / 2
    label = "ROC" if auc is None else f"ROC (AUC {auc:.4f})"
    axes.plot(np.maximum(fpr, floor), tpr, lw=1.5, label=label)
    for far in fars:
        reached = fpr <= far
        tar = tpr[reached].max() if reached.any() else 0.0
        axes.axvline(far, color="gray", ls=":", lw=1)
        axes.plot([far], [tar], "o", label=f"TAR@FAR={far:g}: {100 * tar:.2f}%")
    axes.set_xscale("log")
    axes.set_xlim(floor, 1.0)
    axes.set_ylim(0.0, 1.01)
    axes.set_xlabel("false accept rate")
    axes.set_ylabel("true accept rate")
    axes.grid(alpha=0.3, which="both")
    axes.legend(loc="lower right", fontsize=8)
    axes.set_title(title)
    return save_figure(figure, path)


def loss_curve_figure(losses, *, steps_per_round=None, title="Training loss"):
    """The `matplotlib.figure.Figure` that `plot_loss_curve` writes."""
    try:
        values = np.array(
            [np.nan if v is None else v for v in losses], dtype=np.float64
        )
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"`losses` must be a sequence of numbers (or None); got {losses!r}."
        ) from error
    if values.ndim != 1 or not np.isfinite(values).any():
        raise ValueError(
            "`losses` must be a flat sequence with at least one finite loss; "
            f"got {losses!r}."
        )
    if steps_per_round is not None and (
        isinstance(steps_per_round, bool)
        or not isinstance(steps_per_round, int)
        or steps_per_round < 1
    ):
        raise ValueError(
            "`steps_per_round` must be a positive integer or None; got "
            f"{steps_per_round!r}."
        )
    figure, axes = new_axes(figsize=(5.5, 4))
    rounds = np.arange(1, len(values) + 1)
    if steps_per_round:
        axes.plot(rounds * steps_per_round, values, marker="o")
        axes.set_xlabel("training step")
    else:
        axes.plot(rounds, values, marker="o")
        axes.set_xlabel("epoch")
    axes.set_ylabel("training loss (mean over the round's steps)")
    axes.grid(alpha=0.3)
    axes.set_title(title)
    return figure


def plot_loss_curve(losses, path, *, steps_per_round=None, title="Training loss"):
    """Plots a run's training loss against training steps (or epochs).

    Args:
        losses: One mean loss per round (Keras "epoch"), e.g. the `"loss"`
            column of the run's `history.csv` (`report["history"]["loss"]`).
            `None` (a round that logged no loss) leaves a gap.
        path: Where to write the PNG.
        steps_per_round: Training steps per round: the x axis is then the
            training step at the end of each round. Defaults to `None`: the
            x axis counts epochs (one round per epoch).
        title: Figure title. Defaults to `"Training loss"`.

    Returns:
        `path` as a string.
    """
    figure = loss_curve_figure(losses, steps_per_round=steps_per_round, title=title)
    return save_figure(figure, path)
