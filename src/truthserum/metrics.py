"""Stage 7, metrics: the ROC of an attack pooled over every (target model, target point) pair.

TPR at a false-positive level follows the LiRA reference: the TPR at the last ROC point whose
FPR is strictly below the level. With n non-members the smallest non-zero FPR is 1/n, so a
level below 1/n reads the TPR at zero false positives; the counts are reported beside the
rates so a reader can see how many non-members stand behind each level.

Every number comes with its uncertainty. The pairs of one target point are not independent
(they share the point: an easy point is easy for every model), so the confidence intervals
come from a bootstrap over target points, the columns of the ``(M, T)`` score matrix, never
over single pairs. The empirical privacy lower bound is in :mod:`truthserum.audit`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from truthserum.audit import epsilon_lower_bound
from truthserum.errors import SignalsError

FPR_LEVELS = (0.001, 0.01, 0.1)
BOOTSTRAP_SEED = 0
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


@dataclass(frozen=True)
class BootstrapIntervals:
    """Percentile intervals from a bootstrap over target points.

    ``resamples`` counts the resamples drawn; ``degenerate`` of them drew no member or no
    non-member and were skipped, so the intervals rest on ``resamples - degenerate``.
    """

    auc: tuple[float, float]
    tpr_at_fpr: dict[float, tuple[float, float]]
    confidence: float
    resamples: int
    degenerate: int


@dataclass(frozen=True)
class AttackMetrics:
    """One attack's ROC summary with its uncertainty.

    ``auc_ci`` and ``tpr_at_fpr_ci`` are None when no bootstrap was run (``resamples`` 0).
    ``low_support[level]`` is True when fewer than 10 non-members could be false positives at
    that level, so its TPR rests on a handful of pairs whatever its interval says.
    """

    auc: float
    tpr_at_fpr: dict[float, float]
    members: int
    nonmembers: int
    low_support: dict[float, bool]
    epsilon_lower_bound: float
    delta: float
    confidence: float
    auc_ci: tuple[float, float] | None = None
    tpr_at_fpr_ci: dict[float, tuple[float, float]] | None = None
    resamples: int = 0
    degenerate_resamples: int = 0

    def to_dict(self) -> dict:
        """Plain Python types only, so the dict goes straight into ``json.dump``."""
        def pair(interval):
            return None if interval is None else [float(interval[0]), float(interval[1])]

        return {
            "auc": float(self.auc),
            "auc_ci": pair(self.auc_ci),
            "tpr_at_fpr": {str(level): float(tpr) for level, tpr in self.tpr_at_fpr.items()},
            "tpr_at_fpr_ci": (None if self.tpr_at_fpr_ci is None else
                              {str(level): pair(ci) for level, ci in self.tpr_at_fpr_ci.items()}),
            "low_support": {str(level): bool(low) for level, low in self.low_support.items()},
            "members": int(self.members),
            "nonmembers": int(self.nonmembers),
            "epsilon_lower_bound": float(self.epsilon_lower_bound),
            "delta": float(self.delta),
            "confidence": float(self.confidence),
            "resamples": int(self.resamples),
            "degenerate_resamples": int(self.degenerate_resamples),
        }


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
    true_positives = np.cumsum(hits, dtype=_count_dtype(hits.size))[last_of_tie]
    del hits
    fpr, tpr = np.zeros(points), np.zeros(points)
    np.divide(true_positives, positives, out=tpr[1:])
    last_of_tie += 1  # now the pairs called member at each point
    last_of_tie -= true_positives  # now the false positives
    np.divide(last_of_tie, negatives, out=fpr[1:])
    return RocCurve(fpr=fpr, tpr=tpr, thresholds=thresholds, members=positives, nonmembers=negatives)


def _count_dtype(size: int) -> type:
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


def summarize(
    roc: RocCurve, levels=FPR_LEVELS, *, delta: float = 0.0, confidence: float = 0.95
) -> AttackMetrics:
    """AUC, TPR at each FPR level, the counts and the epsilon lower bound of one ROC.

    The ROC alone cannot be bootstrapped over target points, so the intervals stay None;
    :func:`evaluate` adds them from the scores.
    """
    return AttackMetrics(
        auc=area_under_curve(roc),
        tpr_at_fpr={float(level): tpr_at_fpr(roc, level) for level in levels},
        members=roc.members,
        nonmembers=roc.nonmembers,
        low_support={float(level): low_support(level, roc.nonmembers) for level in levels},
        epsilon_lower_bound=epsilon_lower_bound(roc, delta=delta, confidence=confidence),
        delta=float(delta),
        confidence=float(confidence),
    )


@dataclass(frozen=True)
class _RankedPairs:
    """The pooled pairs sorted once, by descending score, split into members and non-members.

    A resample only reweights columns, so the order and the tie groups never change; all a
    resample needs is which column each pair belongs to and, for every non-member, how many
    members sort strictly above its tie group (``members_above``) and up to its end
    (``members_through``).
    """

    member_columns: np.ndarray
    nonmember_columns: np.ndarray
    members_above: np.ndarray
    members_through: np.ndarray
    columns: int
    ties: bool


def _rank_pairs(scores: np.ndarray, members: np.ndarray) -> _RankedPairs:
    """Sort ``(..., T)`` scores once; the last axis indexes the target points (columns).

    Pair i of the flattened scores is in column ``i % T``. Indices and counts are int32 where
    they fit and temporaries are freed early: this holds millions of pairs."""
    columns = scores.shape[-1]
    scores, members = scores.ravel(), members.ravel()
    count = _count_dtype(scores.size)
    order = np.argsort(scores)[::-1].astype(count)
    sorted_scores, hits = scores[order], members[order]
    column_of_sorted = order % count(columns)
    del order
    group = np.zeros(scores.size, dtype=count)
    np.cumsum(sorted_scores[1:] != sorted_scores[:-1], dtype=count, out=group[1:])
    del sorted_scores
    members_per_group = np.bincount(group[hits], minlength=int(group[-1]) + 1).astype(count)
    through = np.cumsum(members_per_group, dtype=count)
    before = through - members_per_group
    del members_per_group
    nonmember_group = group[~hits]
    del group
    above, through = before[nonmember_group], through[nonmember_group]
    return _RankedPairs(
        member_columns=column_of_sorted[hits],
        nonmember_columns=column_of_sorted[~hits],
        members_above=above,
        members_through=through,
        columns=columns,
        ties=not np.array_equal(above, through),
    )


def _weighted_metrics(
    ranked: _RankedPairs, counts: np.ndarray, levels: np.ndarray
) -> tuple[float, np.ndarray] | None:
    """AUC and TPR at each level of the pooled ROC with every pair weighted by its column's count.

    Weighting by the count is the same as copying the column that many times: copies tie
    with each other, so the tie groups, and the ROC points, are those of the original order
    (a group whose weight is zero adds a repeated point, which changes neither the area nor
    the TPR read below a level). One resample at a time, as 1-D passes: faster than 2-D
    chunks of resamples at every size measured (4e3 to 3.2e6 pairs), numpy's cumulative sum
    along the rows of a 2-D array being several times slower than on a 1-D one.

    Args:
        ranked: the pairs sorted once by :func:`_rank_pairs`.
        counts: ``(T,)`` column multiplicities of one resample.
        levels: the FPR levels, each in (0, 1].

    Returns:
        ``(auc, tpr)`` with one TPR per level, or None when the resample drew no member or no
        non-member.
    """
    # a resample's weights add up to the number of pairs (T draws of M-pair columns); the
    # doubled Mann-Whitney counts below must fit as well
    pairs = ranked.member_columns.size + ranked.nonmember_columns.size
    dtype = np.int32 if 2 * pairs < np.iinfo(np.int32).max else np.int64
    counts = counts.astype(dtype, copy=False)
    member_weight = np.zeros(ranked.member_columns.size + 1, dtype=dtype)
    np.cumsum(counts[ranked.member_columns], dtype=dtype, out=member_weight[1:])
    nonmember_weights = counts[ranked.nonmember_columns]
    nonmember_weight = np.cumsum(nonmember_weights, dtype=dtype)
    positives, negatives = int(member_weight[-1]), int(nonmember_weight[-1])
    if positives == 0 or negatives == 0:
        return None
    # Mann-Whitney: a non-member is ranked below every member above its tie group and half
    # of the members tied with it
    above = member_weight[ranked.members_above]
    beaten_twice = above + member_weight[ranked.members_through] if ranked.ties else 2 * above
    # every product and partial sum is an integer below 2**53, so the dot product is exact
    pairs_twice = np.dot(beaten_twice.astype(np.float64), nonmember_weights.astype(np.float64))
    auc = pairs_twice / (2.0 * positives * negatives)
    # the first non-member whose FPR reaches the level: the ROC point just above its tie group
    # is the last one strictly below the level (FP / N computed as in roc_curve)
    first = np.searchsorted(nonmember_weight / negatives, levels, side="left")
    return float(auc), member_weight[ranked.members_above[first]] / positives


def resample_counts(rng: np.random.Generator, columns: int, resamples: int) -> Iterator[np.ndarray]:
    """The column multiplicities of each bootstrap resample: ``columns`` draws with replacement
    from the columns (target points). Every bootstrap of the package draws through this, so a
    seed means the same resamples whatever statistic is computed from them."""
    for _ in range(resamples):
        yield np.bincount(rng.integers(0, columns, size=columns), minlength=columns)


def percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central ``confidence`` share of the bootstrap replicates.

    Plain percentile, not bias-corrected: on correlated two-Gaussian designs with a known
    answer (16 x 1250 pairs, 400 repetitions) both covered 93-96% at every level and for the
    AUC, and the point estimate's bias (read strictly below the level) was under 0.1 of its
    standard deviation, so the correction bought nothing but noise in its own estimate.
    """
    alpha = 1.0 - confidence
    low, high = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bootstrap_intervals(
    scores: np.ndarray,
    members: np.ndarray,
    *,
    levels=FPR_LEVELS,
    resamples: int = 1000,
    confidence: float = 0.95,
    rng: np.random.Generator | int = BOOTSTRAP_SEED,
) -> BootstrapIntervals:
    """Percentile intervals for the AUC and each TPR at FPR, resampling target points.

    The M pairs of one target point are correlated (the point's own difficulty moves all of
    them), so resampling single pairs would treat M correlated pairs as M independent ones
    and give intervals that are too narrow. Each resample instead draws T columns with
    replacement and recomputes the pooled ROC.

    The pairs are sorted once. A resample is a vector of column multiplicities; it weights
    every pair, and weighted cumulative sums over the fixed order give the ROC, so each
    resample costs a few passes over the pairs rather than a sort (about 10 ms for 3.2e6
    pairs) and holds about 30 bytes per pair in memory.

    Args:
        scores: ``(M, T)`` attack scores, target models by target points. The last axis indexes
            the points; a 1-D array makes every pair its own point.
        members: ground truth of the same shape.
        levels: FPR levels in (0, 1].
        resamples: how many bootstrap resamples to draw (at least 1).
        confidence: two-sided coverage of each interval, in (0, 1).
        rng: a generator or a seed; the same seed gives the same intervals.

    Returns:
        The intervals, with how many resamples were drawn and how many were skipped.

    Raises:
        SignalsError: bad scores (see :func:`roc_curve`), or more than half of the resamples
            drew no member or no non-member (too few points to bootstrap).
        ValueError: an option out of range.
    """
    scores, members = checked_pairs(scores, members)
    levels_array = np.asarray(levels, dtype=np.float64).ravel()
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if ((levels_array <= 0.0) | (levels_array > 1.0)).any():
        raise ValueError(f"FPR levels must be in (0, 1], got {levels}")
    rng = np.random.default_rng(rng)
    ranked = _rank_pairs(scores, members)
    aucs, tprs = [], []
    for counts in resample_counts(rng, ranked.columns, resamples):
        measured = _weighted_metrics(ranked, counts, levels_array)
        if measured is not None:
            aucs.append(measured[0]), tprs.append(measured[1])
    degenerate = resamples - len(aucs)
    if 2 * degenerate > resamples:
        raise SignalsError(
            f"{degenerate} of {resamples} bootstrap resamples drew no member or no non-member: "
            "too few target points for a bootstrap"
        )
    auc, tpr = np.array(aucs), np.array(tprs)
    return BootstrapIntervals(
        auc=percentile_interval(auc, confidence),
        tpr_at_fpr={float(level): percentile_interval(tpr[:, i], confidence)
                    for i, level in enumerate(levels_array)},
        confidence=float(confidence),
        resamples=int(resamples),
        degenerate=degenerate,
    )


def evaluate(
    scores: np.ndarray,
    members: np.ndarray,
    levels=FPR_LEVELS,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    delta: float = 0.0,
    rng: np.random.Generator | int = BOOTSTRAP_SEED,
    roc: RocCurve | None = None,
) -> AttackMetrics:
    """Everything measured about ``scores`` against the ground truth ``members``.

    Args:
        scores: ``(M, T)`` attack scores (see :func:`bootstrap_intervals` for the layout).
        members: ground truth of the same shape.
        levels: FPR levels at which to read the TPR.
        resamples: bootstrap resamples over target points; 0 skips the bootstrap (intervals
            None), which is much faster on large inputs.
        confidence: coverage of the intervals and of the epsilon lower bound.
        delta: the delta at which the epsilon lower bound is stated.
        rng: generator or seed of the bootstrap; the default is fixed, so results repeat.
        roc: ``roc_curve(scores, members)``, when the caller has it already (it sorts every
            pair, so it is not worth computing twice on large inputs).

    Returns:
        The point estimates, their intervals, the support flags and the epsilon lower bound.

    Raises:
        SignalsError: bad scores or too few target points to bootstrap.
    """
    if resamples < 0:
        raise ValueError(f"resamples must be 0 (no bootstrap) or more, got {resamples}")
    if roc is None:
        roc = roc_curve(scores, members)
    metrics = summarize(roc, levels, delta=delta, confidence=confidence)
    if resamples == 0:
        return metrics
    del roc  # freed before the bootstrap, unless the caller holds it
    return with_intervals(metrics, bootstrap_intervals(
        scores, members, levels=levels, resamples=resamples, confidence=confidence, rng=rng
    ))


def with_intervals(metrics: AttackMetrics, intervals: BootstrapIntervals) -> AttackMetrics:
    """``metrics`` with the bootstrap's intervals filled in."""
    return replace(
        metrics, auc_ci=intervals.auc, tpr_at_fpr_ci=intervals.tpr_at_fpr,
        resamples=intervals.resamples, degenerate_resamples=intervals.degenerate,
    )
