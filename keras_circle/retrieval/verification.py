"""Face verification metrics of pairs (the LFW and IJB protocols), in NumPy."""

import math

import numpy as np

from keras_circle.retrieval.checks import MEMORY_BUDGET
from keras_circle.retrieval.checks import check_block_size
from keras_circle.retrieval.checks import check_embeddings
from keras_circle.retrieval.checks import check_labels


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
    check_block_size(block_size)
    a = check_embeddings(embeddings_a, "embeddings_a")
    b = check_embeddings(embeddings_b, "embeddings_b")
    if a.shape != b.shape:
        raise ValueError(
            "`embeddings_a` and `embeddings_b` must have the same shape; got "
            f"{a.shape} and {b.shape}."
        )
    same = check_labels(is_same, a.shape[0], "is_same", "embeddings_a")
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

    rows = block_size or max(1, MEMORY_BUDGET // (16 * a.shape[1]))
    sims = np.concatenate(
        [
            np.einsum("ij,ij->i", a[i : i + rows], b[i : i + rows])
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
