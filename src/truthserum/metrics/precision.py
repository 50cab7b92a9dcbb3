"""Stage 7, metrics: the precision of a membership attack at a fixed recall.

An untargeted adversary does not pick targets; it wants to be right when it claims "this
person was in the training set". Precision at a fixed recall answers that: call the top
``recall`` share of members, and count how many of the calls are right. With as many members
as non-members among the pairs, precision = TPR / (TPR + FPR). Two attacks at the same recall
call the same number of members, so the ratio of their false positives is the ratio of their
odds (1 - precision) / precision: :func:`false_positive_ratio`.

Intervals come from the same bootstrap over target points as the ROC's (see
:mod:`truthserum.metrics.roc`): each resample reweights the columns of the ``(M, T)`` scores.
"""

from __future__ import annotations

import numpy as np

from truthserum.metrics.roc import checked_pairs, tie_ends
from truthserum.metrics.bootstrap import percentile_interval, resample_counts

RECALL_LEVELS = (0.01, 0.1)


class _Ranked:
    """Pairs sorted once by descending score, with the end of every run of equal scores."""

    def __init__(self, scores: np.ndarray, members: np.ndarray):
        columns = scores.shape[-1]
        flat_scores, flat_members = scores.ravel(), members.ravel()
        order = np.argsort(-flat_scores, kind="mergesort")
        self.hits = flat_members[order]
        self.column_of = (np.arange(flat_scores.size) % columns)[order]
        self.tie_ends = tie_ends(flat_scores[order])
        self.columns = columns

    def precision(self, weights: np.ndarray, levels: np.ndarray) -> np.ndarray | None:
        """Precision at each recall level with pair weights ``weights`` (None: no member or
        no non-member). A threshold takes whole runs of tied scores; the first run at which
        the recall reaches the level sets it."""
        true_positives = np.cumsum(weights * self.hits)[self.tie_ends]
        called = np.cumsum(weights)[self.tie_ends]
        positives, total = true_positives[-1], called[-1]
        if positives == 0 or positives == total:
            return None
        first = np.searchsorted(true_positives / positives, levels, side="left")
        return true_positives[first] / called[first]


def precision_at_recall(
    scores: np.ndarray, members: np.ndarray, *, levels=RECALL_LEVELS, resamples: int = 1000,
    confidence: float = 0.95, rng: np.random.Generator | int = 0,
) -> dict:
    """Precision at each recall level, with bootstrap intervals over target points.

    Args:
        scores: ``(M, T)`` attack scores (target models by target points).
        members: the ground truth, same shape.
        levels: recall levels in (0, 1].
        resamples: bootstrap resamples of the T columns (0: no intervals).
        confidence: coverage of the intervals.
        rng: generator or seed of the bootstrap.

    Returns:
        ``{"recall": [...], "precision": [...], "precision_ci": [[lo, hi], ...] or None,
        "member_share": share of members among the pairs (the precision of a random guess)}``.
    """
    scores, members = checked_pairs(scores, members)
    levels_array = np.asarray(levels, dtype=np.float64)
    if ((levels_array <= 0.0) | (levels_array > 1.0)).any():
        raise ValueError(f"recall levels must be in (0, 1], got {levels}")
    ranked = _Ranked(scores, members)
    point = ranked.precision(np.ones(scores.size), levels_array)
    assert point is not None  # checked_pairs made sure that both classes are present
    intervals = None
    if resamples:
        generator = np.random.default_rng(rng)
        samples = []
        for counts in resample_counts(generator, ranked.columns, resamples):
            measured = ranked.precision(counts[ranked.column_of].astype(np.float64), levels_array)
            if measured is not None:
                samples.append(measured)
        if samples:
            table = np.array(samples)
            intervals = [list(percentile_interval(table[:, i], confidence)) for i in range(len(levels_array))]
    return {
        "recall": [float(level) for level in levels_array],
        "precision": [float(value) for value in point],
        "precision_ci": intervals,
        "member_share": float(members.mean()),
    }


def false_positive_ratio(baseline: float, other: float) -> float:
    """How many times fewer false positives ``other`` makes than ``baseline`` at the same recall,
    from their precisions: at equal recall both call the same members, so the false positives
    are in the ratio of the odds (1 - precision) / precision. inf when ``other`` makes none."""
    if other >= 1.0:
        return float("inf")
    if baseline >= 1.0:
        return 0.0
    return ((1.0 - baseline) / baseline) / ((1.0 - other) / other)
