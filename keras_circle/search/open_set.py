"""Open-set matching: the distance threshold `EmbeddingIndex.calibrate` chooses.

A query is matched to its nearest gallery row and accepted when the cosine
distance `1 - similarity` is at most the threshold. The threshold comes from
labelled queries: precision, recall and F1 at each distinct distance.
"""

import numpy as np


def check_target_precision(target_precision):
    """`target_precision` unchanged when it is None or in (0, 1]."""
    if target_precision is not None and not (
        isinstance(target_precision, float | int) and 0 < target_precision <= 1
    ):
        raise ValueError(
            f"`target_precision` must be in (0, 1] or None; got {target_precision!r}."
        )
    return target_precision


def choose_threshold(distance, correct, target_precision=None):
    """The threshold and its curve, as `EmbeddingIndex.calibrate` returns them.

    Args:
        distance: float64 `(num_queries,)`, each query's distance to its
            nearest gallery row.
        correct: bool `(num_queries,)`, whether that row has the query's label.
        target_precision: in (0, 1], or `None` for the best F1.
    """
    order = np.argsort(distance, kind="stable")
    distance, correct = distance[order], correct[order]
    # One point per distinct distance: the last query of each run.
    last = np.flatnonzero(np.diff(distance, append=np.inf) != 0)
    accepted = last + 1
    right = np.cumsum(correct)[last]
    precision = right / accepted
    recall = right / distance.size
    f1 = np.where(right > 0, 2 * precision * recall / (precision + recall + 1e-300), 0)
    if target_precision is None:
        best = int(np.argmax(f1))
    else:
        reach = np.flatnonzero(precision >= target_precision - 1e-12)
        if reach.size == 0:
            raise ValueError(
                f"No threshold reaches `target_precision`={target_precision}; "
                f"the best precision is {precision.max():.4f}."
            )
        best = int(reach[-1])
    return {
        "threshold": float(distance[last[best]]),
        "precision": float(precision[best]),
        "recall": float(recall[best]),
        "f1": float(f1[best]),
        "curve": {
            "thresholds": distance[last],
            "precision": precision,
            "recall": recall,
            "f1": f1,
        },
    }
