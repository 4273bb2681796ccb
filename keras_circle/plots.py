"""Diagnostic plots for metric learning, each written to a PNG file.

Here: the Circle loss decision boundary with pair similarities (the
paper's Fig. 5), the training's mean similarities per epoch against that
boundary, and positive/negative similarity histograms. Re-exported from
`keras_circle.curves`: Recall@K, re-ID CMC, verification ROC and the
training loss. Each `plot_*` function writes a PNG; a `*_figure` function
beside it returns the `matplotlib.figure.Figure` it draws (axes, limits
and labels can be checked or restyled before saving). Drawn on the Agg
canvas without pyplot (`keras_circle.figures`): no change to the global
backend, safe in threads and on machines without a display.
"""

import numpy as np

from keras_circle import retrieval
from keras_circle.curves import cmc_figure
from keras_circle.curves import loss_curve_figure
from keras_circle.curves import plot_cmc
from keras_circle.curves import plot_loss_curve
from keras_circle.curves import plot_recall_at_k
from keras_circle.curves import plot_roc
from keras_circle.curves import recall_at_k_figure
from keras_circle.figures import new_axes as _axes
from keras_circle.figures import save_figure as _save

__all__ = [
    "cmc_figure",
    "loss_curve_figure",
    "pair_similarities",
    "plot_circle_boundary",
    "plot_cmc",
    "plot_loss_curve",
    "plot_recall_at_k",
    "plot_roc",
    "plot_similarity_histograms",
    "plot_similarity_trajectory",
    "recall_at_k_figure",
    "similarity_histograms_figure",
]


def _circle_axes(margin):
    """A square figure with the Eq. 8 circle `s_n**2 + (s_p - 1)**2 = 2 m**2`."""
    figure, axes = _axes((5.0, 5.0))
    radius = np.sqrt(2.0) * margin
    angle = np.linspace(0.0, 2.0 * np.pi, 400)
    axes.plot(
        radius * np.cos(angle),
        1.0 + radius * np.sin(angle),
        "k-",
        lw=1.5,
        label=f"Circle boundary (Eq. 8), m={margin:g}",
    )
    return figure, axes


def pair_similarities(embeddings, labels, max_pairs=2000, *, mode="mean", seed=0):
    """Per-anchor positive and negative similarities `(s_p, s_n)` of a batch.

    Each anchor gives one point: with `mode="mean"` the mean cosine similarity
    to the other samples of its class (`s_p`) and to the samples of other
    classes (`s_n`); with `mode="hardest"` the lowest positive and the highest
    negative similarity. Anchors without a positive or a negative are
    dropped. Works blockwise, so it also runs on large evaluation sets.

    Args:
        embeddings: Array `(num_samples, dim)`.
        labels: Integer labels `(num_samples,)`.
        max_pairs: At most this many `(s_p, s_n)` points: anchors are sampled
            uniformly (with `seed`) when there are more. Defaults to `2000`.
        mode: `"mean"` or `"hardest"`. Defaults to `"mean"`.
        seed: Seed of the anchor sampling. Defaults to `0`.

    Returns:
        `(s_p, s_n)`, two float arrays `(num_points,)`.
    """
    if mode not in ("mean", "hardest"):
        raise ValueError(f"`mode` must be 'mean' or 'hardest'; got {mode!r}.")
    x = retrieval.checks.check_embeddings(embeddings, "embeddings", 2)
    labels = retrieval.checks.check_labels(labels, x.shape[0], "labels", "embeddings")
    anchors = np.arange(x.shape[0])
    if anchors.size > max_pairs:
        anchors = np.sort(np.random.default_rng(seed).choice(anchors, max_pairs, False))
    s_p, s_n = [], []
    for start, stop, sims in retrieval.checks.query_blocks(
        x[anchors], x, 8, None, verbose=0
    ):
        rows = np.arange(stop - start)
        positive = labels[anchors[start:stop], None] == labels
        positive[rows, anchors[start:stop]] = False  # the self-pair is no pair
        negative = labels[anchors[start:stop], None] != labels
        if mode == "mean":
            s_p.append((sims * positive).sum(1) / np.maximum(positive.sum(1), 1))
            s_n.append((sims * negative).sum(1) / np.maximum(negative.sum(1), 1))
        else:
            s_p.append(np.where(positive, sims, np.inf).min(1))
            s_n.append(np.where(negative, sims, -np.inf).max(1))
        keep = positive.any(1) & negative.any(1)
        s_p[-1], s_n[-1] = s_p[-1][keep], s_n[-1][keep]
    return np.concatenate(s_p).astype(np.float64), np.concatenate(s_n).astype(
        np.float64
    )


def plot_circle_boundary(
    s_p, s_n=None, path=None, margin=0.25, *, title=None, max_points=5000
):
    """Plots `(s_n, s_p)` points against Circle loss's decision boundary.

    The boundary of the simplified Circle loss (Eq. 8) is the circle
    `s_n^2 + (s_p - 1)^2 = 2 m^2` around the target `(s_n, s_p) = (0, 1)`;
    pairs inside it are the ones the loss no longer pushes hard. The line
    `s_p - s_n = m` of the unified loss (Eq. 1, triplet / AM-Softmax) is
    drawn dashed for comparison, as in the paper's Fig. 1 and Fig. 5.

    Two call forms:
    `plot_circle_boundary(s_p, s_n, path, margin=...)` for one point set, and
    `plot_circle_boundary({"before": (s_p, s_n), "after": (s_p, s_n)}, path,
    margin=...)` for several, each drawn in its own colour.

    Args:
        s_p: Positive similarities `(num_points,)`, or a dict
            `{name: (s_p, s_n)}` of point sets (then the second positional
            argument is `path`). `pair_similarities` makes them.
        s_n: Negative similarities `(num_points,)`.
        path: Where to write the PNG.
        margin: The relaxation margin m. Defaults to `0.25`.
        title: Figure title, or `None` for one naming m. Defaults to `None`.
        max_points: Points drawn per set at most (a fixed subsample beyond).
            Defaults to `5000`.

    Returns:
        `path` as a string.

    Example:

    >>> s_p, s_n = keras_circle.plots.pair_similarities(embeddings, labels)
    >>> keras_circle.plots.plot_circle_boundary(s_p, s_n, "boundary.png",
    ...                                         margin=0.4)
    'boundary.png'

    Reference:
        Sun et al., "Circle Loss: A Unified Perspective of Pair Similarity
        Optimization", CVPR 2020, Eq. 8 and Fig. 5.
    """
    if isinstance(s_p, dict):
        sets, path = s_p, path if s_n is None else s_n
    else:
        sets = {"pairs": (s_p, s_n)}
    if not sets:
        raise ValueError("Pass at least one point set; got an empty dict.")
    figure, axes = _circle_axes(margin)
    line = np.linspace(-1.0, 1.0, 2)
    axes.plot(
        line, line + margin, "k--", lw=1, alpha=0.6, label=f"s_p - s_n = {margin:g}"
    )
    axes.plot([0.0], [1.0], "k*", ms=10, label="target (0, 1)")
    rng = np.random.default_rng(0)
    lowest = 0.0
    for name, (sp, sn) in sets.items():
        sp, sn = np.asarray(sp, np.float64).ravel(), np.asarray(sn, np.float64).ravel()
        if sp.shape != sn.shape:
            raise ValueError(
                f"s_p and s_n of {name!r} must have the same length; got "
                f"{sp.size} and {sn.size}."
            )
        if sp.size > max_points:
            pick = rng.choice(sp.size, max_points, replace=False)
            sp, sn = sp[pick], sn[pick]
        axes.scatter(sn, sp, s=8, alpha=0.5, label=f"{name} ({sp.size})")
        if sp.size:
            lowest = min(lowest, sn.min(), sp.min())
    low = max(-1.0, lowest - 0.05)
    axes.set_xlim(low, 1.0)
    axes.set_ylim(low, 1.05)
    axes.set_aspect("equal")
    axes.set_xlabel("s_n (negative similarity)")
    axes.set_ylabel("s_p (positive similarity)")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    axes.set_title(title or f"Circle loss decision boundary, m={margin:g}")
    return _save(figure, path)


def sample_pairs(labels, max_pairs, rng):
    """`((i, j), (i, j))`: positive and negative index pairs of `labels`.

    All pairs when there are at most `max_pairs`, else up to `max_pairs // 2`
    of each, positives uniform over the anchors that have one.
    """
    n = labels.size
    if n * (n - 1) // 2 <= max_pairs:
        i, j = np.triu_indices(n, k=1)
        same = labels[i] == labels[j]
        return (i[same], j[same]), (i[~same], j[~same])
    half = max(1, max_pairs // 2)
    order = np.argsort(labels, kind="stable")
    _, first, counts = np.unique(labels[order], return_index=True, return_counts=True)
    group = np.repeat(np.arange(first.size), counts)  # group of order[p]
    position = np.empty(n, np.int64)
    position[order] = np.arange(n)
    with_pos = np.flatnonzero(counts[group[position]] > 1)
    pos_pairs = (np.empty(0, np.int64),) * 2
    if with_pos.size:
        i = rng.choice(with_pos, half)
        g = group[position[i]]
        # A uniform other member: skip over the anchor's own slot.
        offset = rng.integers(0, counts[g] - 1)
        offset += offset >= position[i] - first[g]
        pos_pairs = (i, order[first[g] + offset])
    i, j = rng.integers(0, n, 4 * half), rng.integers(0, n, 4 * half)
    keep = labels[i] != labels[j]
    return pos_pairs, (i[keep][:half], j[keep][:half])


def similarity_histograms_figure(
    embeddings, labels, *, max_pairs=200_000, bins=100, margin=None, seed=0
):
    """The `matplotlib.figure.Figure` that `plot_similarity_histograms` writes."""
    x = retrieval.checks.check_embeddings(embeddings, "embeddings", 2)
    labels = retrieval.checks.check_labels(labels, x.shape[0], "labels", "embeddings")
    positives, negatives = sample_pairs(labels, max_pairs, np.random.default_rng(seed))
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sets = [
        (name, colour, np.einsum("ij,ij->i", x[i], x[j]))
        for (i, j), name, colour in (
            (positives, "positive", "tab:green"),
            (negatives, "negative", "tab:red"),
        )
        if i.size
    ]
    if not sets:
        raise ValueError("`labels` give no pair: pass at least two samples.")
    # The bins span the similarities there are (a trained embedder's pairs
    # may all lie in [0.6, 1]), not the whole [-1, 1].
    low = min(sims.min() for _, _, sims in sets)
    high = max(sims.max() for _, _, sims in sets)
    pad = max(0.02, 0.03 * (high - low))
    low, high = max(-1.0, low - pad), min(1.0, high + pad)
    edges = np.linspace(low, high, bins + 1)
    figure, axes = _axes((6.0, 4.0))
    for name, colour, sims in sets:
        axes.hist(
            sims,
            bins=edges,
            density=True,
            alpha=0.5,
            color=colour,
            label=f"{name} pairs ({sims.size}, mean {sims.mean():.3f})",
        )
    if margin is not None:
        for value, colour, label in (
            (1 - margin, "tab:green", f"1 - m = {1 - margin:g}"),
            (margin, "tab:red", f"m = {margin:g}"),
        ):
            # A target outside the data's range would only squeeze the data.
            if low <= value <= high:
                axes.axvline(value, color=colour, ls="--", label=label)
    axes.set_xlim(low, high)
    axes.set_xlabel("cosine similarity")
    axes.set_ylabel("density")
    axes.legend(fontsize=8)
    axes.set_title("Pair similarities")
    return figure


def plot_similarity_histograms(
    embeddings, labels, path, *, max_pairs=200_000, bins=100, margin=None, seed=0
):
    """Plots histograms of positive and negative pair cosine similarities.

    Small sets use every pair; larger ones a uniform sample of up to
    `max_pairs // 2` positive and as many negative pairs, so the rare
    positives still show. Both histograms are densities, over the range the
    similarities occupy (not the whole `[-1, 1]`).

    Args:
        embeddings: Array `(num_samples, dim)` (L2-normalised here).
        labels: Integer labels `(num_samples,)`.
        path: Where to write the PNG.
        max_pairs: Pair budget. Defaults to `200_000`.
        bins: Histogram bins over the similarities' range. Defaults to `100`.
        margin: If set, marks Circle loss's targets `s_p > 1 - m` and
            `s_n < m` (delta_p and delta_n) where they fall in that range.
            Defaults to `None`.
        seed: Seed of the pair sampling. Defaults to `0`.

    Returns:
        `path` as a string.
    """
    figure = similarity_histograms_figure(
        embeddings, labels, max_pairs=max_pairs, bins=bins, margin=margin, seed=seed
    )
    return _save(figure, path)


def _history_column(history, name):
    values = history.get(name)
    if values is None:
        raise ValueError(
            f"`history` has no {name!r}: compile the model with "
            "`metrics=keras_circle.metrics.circle_statistics(margin)`; got "
            f"the names {sorted(history)}."
        )
    return np.array([np.nan if v is None else v for v in values], np.float64)


def plot_similarity_trajectory(history, path, margin=0.4, *, title=None):
    """Plots `(mean_s_n, mean_s_p)` of every epoch next to the Eq. 8 circle.

    One point per epoch (or per logged round), joined in order from the
    first (marked) to the last, in the plane of `plot_circle_boundary`:
    training moves the batch's mean positive similarity up and its mean
    negative similarity towards 0, into the circle
    `s_n**2 + (s_p - 1)**2 = 2 m**2` around the optimum `(0, 1)`. Points
    of a validation run (`val_mean_s_p`, `val_mean_s_n`) are drawn too when
    the history has them. Epochs without a value (NaN or `None`) are left out.

    Args:
        history: A `keras.callbacks.History`, or a dict `{name: [value per
            epoch]}` (`History.history`, or the pipeline's `history.csv` read
            by `keras_circle.pipeline.run_folder.read_history`) with
            `mean_s_p` and `mean_s_n` (from
            `keras_circle.metrics.circle_statistics`).
        path: Where to write the PNG.
        margin: The relaxation margin m of the circle. Defaults to `0.4`.
        title: Figure title, or `None` for one naming m. Defaults to `None`.

    Returns:
        `(path, points)`: the path as a string and the plotted training
        points, a float64 array `(num_points, 2)` of `(s_n, s_p)` rows in
        epoch order.

    Example:

    >>> history = model.fit(...)  # compiled with circle_statistics(0.4)
    >>> path, points = keras_circle.plots.plot_similarity_trajectory(
    ...     history, "circle_trajectory.png", margin=0.4)
    """
    history = getattr(history, "history", history)
    if not isinstance(history, dict):
        raise ValueError(
            "`history` must be a keras History or a dict of per-epoch lists; "
            f"got {type(history).__name__}."
        )
    runs = {"training": ""}
    if "val_mean_s_p" in history and "val_mean_s_n" in history:
        runs["validation"] = "val_"
    figure, axes = _circle_axes(margin)
    radius = np.sqrt(2.0) * margin
    axes.plot([0.0], [1.0], "k*", ms=10, label="optimum (0, 1)")
    plotted, every = {}, [np.array([[-radius, 1.0 - radius], [radius, 1.0]])]
    for run, prefix in runs.items():
        s_p = _history_column(history, prefix + "mean_s_p")
        s_n = _history_column(history, prefix + "mean_s_n")
        if s_p.shape != s_n.shape:
            raise ValueError(
                f"`{prefix}mean_s_p` and `{prefix}mean_s_n` must have one value "
                f"per epoch each; got {s_p.size} and {s_n.size}."
            )
        keep = np.isfinite(s_p) & np.isfinite(s_n)
        points = np.stack([s_n[keep], s_p[keep]], axis=1)
        plotted[run] = points
        if not points.size:
            continue
        every.append(points)
        line = axes.plot(points[:, 0], points[:, 1], "o-", ms=4, label=run)[0]
        axes.plot(*points[0], "s", color=line.get_color(), ms=8)
        axes.annotate("first", points[0], textcoords="offset points", xytext=(6, -4))
        axes.annotate("last", points[-1], textcoords="offset points", xytext=(6, 4))
    if not plotted["training"].size:
        raise ValueError(
            "`history` has no epoch with finite `mean_s_p` and `mean_s_n`."
        )
    every = np.concatenate(every)
    low, high = every.min(axis=0) - 0.05, every.max(axis=0) + 0.05
    axes.set_xlim(max(-1.0, low[0]), min(1.0, high[0]))
    axes.set_ylim(max(-1.0, low[1]), min(1.05, high[1]))
    axes.set_aspect("equal")
    axes.set_xlabel("mean s_n (negative similarity)")
    axes.set_ylabel("mean s_p (positive similarity)")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    axes.set_title(title or f"Mean similarities per epoch, m={margin:g}")
    return _save(figure, path), plotted["training"]
