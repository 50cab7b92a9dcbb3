"""Stage 7, metrics: the ROC of an attack pooled over every (target model, target point) pair.

TPR at a false-positive level follows the LiRA reference: the TPR at the last ROC point whose
FPR is strictly below the level. With n non-members the smallest non-zero FPR is 1/n, so a
level below 1/n reads the TPR at zero false positives; the counts are reported beside the
rates so a reader can see how many non-members stand behind each level.

Every number comes with its uncertainty. The pairs of one target point are not independent
(they share the point: an easy point is easy for every model), so the confidence intervals
come from a bootstrap over target points, the columns of the ``(M, T)`` score matrix, never
over single pairs. The empirical privacy lower bound is in :mod:`truthserum.metrics.epsilon`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from truthserum.errors import SignalsError

FPR_LEVELS = (0.001, 0.01, 0.1)
LOW_SUPPORT_FALSE_POSITIVES = 10


@dataclass(frozen=True)
class RocCurve:
    """ROC points from the strictest threshold to the loosest, starting at (0, 0), and the
    member and non-member counts behind them."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    members: int
    nonmembers: int

    def thinned(self, points: int = 20_000) -> RocCurve:
        """The curve at most about ``points`` ROC points, for plotting: on a log-FPR axis
        every step below FPR 1e-3 is kept exactly and the rest sampled evenly in log FPR. A
        million pairs would otherwise keep a curve of millions of points per attack."""
        if self.fpr.size <= points:
            return self
        low = np.nonzero(self.fpr < 1e-3)[0]
        grid = np.searchsorted(self.fpr, np.geomspace(1e-3, 1.0, points // 2))
        keep = np.unique(np.r_[low, np.clip(grid, 0, self.fpr.size - 1), self.fpr.size - 1])
        if keep.size > points:  # very many non-members: sample the low region too
            keep = np.unique(np.r_[np.linspace(0, low[-1], points // 2).astype(np.int64), keep[keep > low[-1]]])
        return replace(self, fpr=self.fpr[keep], tpr=self.tpr[keep], thresholds=self.thresholds[keep])


def checked_pairs(scores: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Checked float scores and bool membership of the same shape.

    Raises:
        SignalsError: shapes differ, a score is NaN, or one class is missing.
    """
    scores = np.asarray(scores, dtype=np.float64)
    members = np.asarray(members, dtype=bool)
    if scores.shape != members.shape:
        raise SignalsError(f"scores {scores.shape} and members {members.shape} differ in size")
    if np.isnan(scores).any():
        raise SignalsError("attack scores contain NaN")
    positives = int(members.sum())
    negatives = members.size - positives
    if positives == 0 or negatives == 0:
        raise SignalsError(
            f"need both members and non-members among the targets, got {positives} and {negatives}"
        )
    return scores, members


def tie_ends(sorted_scores: np.ndarray) -> np.ndarray:
    """Index of the last pair of each run of equal scores (``!=`` so that inf ties inf)."""
    return np.r_[np.nonzero(sorted_scores[1:] != sorted_scores[:-1])[0], sorted_scores.size - 1]


def roc_curve(scores: np.ndarray, members: np.ndarray) -> RocCurve:
    """Every distinct score is a threshold; a pair is called member when score >= threshold.

    Raises:
        SignalsError: a score is NaN, or members/non-members are missing.
    """
    scores, members = checked_pairs(np.ravel(scores), np.ravel(members))
    positives = int(members.sum())
    negatives = members.size - positives
    # Written for millions of pairs: every temporary is freed as soon as it is used, and counts
    # are int32 where they fit, so the peak stays a few times the scores' own size.
    sorted_scores, hits = _sorted_descending(scores, members)
    # ties move the curve diagonally: one point per run of equal scores
    last_of_tie = tie_ends(sorted_scores)
    points = last_of_tie.size + 1
    thresholds = np.empty(points)
    thresholds[0] = np.inf
    np.take(sorted_scores, last_of_tie, out=thresholds[1:])
    del sorted_scores
    true_positives = np.cumsum(hits, dtype=count_dtype(hits.size))[last_of_tie]
    del hits
    fpr, tpr = np.zeros(points), np.zeros(points)
    np.divide(true_positives, positives, out=tpr[1:])
    last_of_tie += 1  # now the pairs called member at each point
    last_of_tie -= true_positives  # now the false positives
    np.divide(last_of_tie, negatives, out=fpr[1:])
    return RocCurve(fpr=fpr, tpr=tpr, thresholds=thresholds, members=positives, nonmembers=negatives)


def count_dtype(size: int) -> type:
    return np.int32 if size < np.iinfo(np.int32).max else np.int64


def _sorted_descending(scores: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores sorted from highest to lowest and the membership in the same order. The order
    within a run of equal scores is arbitrary: every use groups ties."""
    order = np.argsort(scores)[::-1]
    return scores[order], members[order]


def area_under_curve(roc: RocCurve) -> float:
    """Trapezoidal AUC (ties count one half, as in the Mann-Whitney statistic)."""
    return float(np.trapezoid(roc.tpr, roc.fpr))


def tpr_at_fpr(roc: RocCurve, level: float) -> float:
    """TPR at the last ROC point with FPR strictly below ``level``."""
    below = np.nonzero(roc.fpr < level)[0]
    return float(roc.tpr[below[-1]])


def low_support(level: float, nonmembers: int) -> bool:
    """Whether fewer than 10 non-members could be false positives at ``level``.

    Below that the TPR is read off a threshold set by the top few non-member scores, and
    neither the rate nor its bootstrap interval (which cannot invent unseen scores) is stable.
    """
    return bool(level * nonmembers < LOW_SUPPORT_FALSE_POSITIVES)
