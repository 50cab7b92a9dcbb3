"""Stage 7, metrics: the ROC of an attack pooled over every (target model, target point) pair.

TPR at a false-positive level follows the LiRA reference: the TPR at the last ROC point whose
FPR is strictly below the level. With n non-members the smallest non-zero FPR is 1/n, so a
level below 1/n reads the TPR at zero false positives; the counts are reported beside the
rates so a reader can see how many non-members stand behind each level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from truthserum.errors import SignalsError

FPR_LEVELS = (0.001, 0.01, 0.1)


@dataclass(frozen=True)
class RocCurve:
    """ROC points from the strictest threshold to the loosest, starting at (0, 0), and the
    member and non-member counts behind them."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    members: int
    nonmembers: int


@dataclass(frozen=True)
class AttackMetrics:
    auc: float
    tpr_at_fpr: dict[float, float]
    members: int
    nonmembers: int

    def to_dict(self) -> dict:
        return {
            "auc": self.auc,
            "tpr_at_fpr": {str(level): tpr for level, tpr in self.tpr_at_fpr.items()},
            "members": self.members,
            "nonmembers": self.nonmembers,
        }


def roc_curve(scores: np.ndarray, members: np.ndarray) -> RocCurve:
    """Every distinct score is a threshold; a pair is called member when score >= threshold.

    Raises:
        SignalsError: scores are not finite, or members/non-members are missing.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    members = np.asarray(members, dtype=bool).ravel()
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
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores = scores[order]
    hits = members[order]
    # the last index of each run of equal scores: ties move the curve diagonally
    last_of_tie = np.r_[np.nonzero(np.diff(sorted_scores))[0], scores.size - 1]
    true_positives = np.cumsum(hits)[last_of_tie]
    false_positives = (last_of_tie + 1) - true_positives
    return RocCurve(
        fpr=np.r_[0.0, false_positives / negatives],
        tpr=np.r_[0.0, true_positives / positives],
        thresholds=np.r_[np.inf, sorted_scores[last_of_tie]],
        members=positives,
        nonmembers=negatives,
    )


def area_under_curve(roc: RocCurve) -> float:
    """Trapezoidal AUC (ties count one half, as in the Mann-Whitney statistic)."""
    return float(np.trapezoid(roc.tpr, roc.fpr))


def tpr_at_fpr(roc: RocCurve, level: float) -> float:
    """TPR at the last ROC point with FPR strictly below ``level``."""
    below = np.nonzero(roc.fpr < level)[0]
    return float(roc.tpr[below[-1]])


def summarize(roc: RocCurve, levels=FPR_LEVELS) -> AttackMetrics:
    """AUC, TPR at each FPR level, and the member and non-member counts of one ROC."""
    return AttackMetrics(
        auc=area_under_curve(roc),
        tpr_at_fpr={float(level): tpr_at_fpr(roc, level) for level in levels},
        members=roc.members,
        nonmembers=roc.nonmembers,
    )


def evaluate(scores: np.ndarray, members: np.ndarray, levels=FPR_LEVELS) -> AttackMetrics:
    """:func:`summarize` the ROC of ``scores`` against the ground truth ``members``."""
    return summarize(roc_curve(scores, members), levels)
