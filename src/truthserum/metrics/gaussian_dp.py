"""Gaussian-DP auditing bounds (Nasr, Hayes, Steinke, Balle, Tramèr, Jagielski, Carlini, Terzis,
"Tight Auditing of Differentially Private Machine Learning", USENIX Security 2023).

A mechanism is mu-GDP (Dong, Roth, Su 2022) when telling its output on two neighbouring inputs
apart is no easier than telling N(0, 1) from N(mu, 1): every test has
``FNR >= Phi(Phi^-1(1 - FPR) - mu)``. Read backwards, a test with false-positive rate FPR and
false-negative rate FNR shows

    mu >= Phi^-1(1 - FPR) - Phi^-1(FNR).

The audit replaces both rates by Clopper-Pearson upper bounds, which makes the right side
smaller, so the result is a lower bound on mu at the stated confidence. A mu-GDP mechanism is
(epsilon, delta)-DP exactly when (Dong, Roth, Su, Corollary 2.13)

    delta >= Phi(-epsilon / mu + mu / 2) - e^epsilon Phi(-epsilon / mu - mu / 2),

so the mu bound becomes the epsilon of the mu-GDP curve at the audited delta. That step
assumes the mechanism's trade-off curve has the Gaussian shape (close to true of DP-SGD after
many steps, by Dong, Roth and Su's central limit theorem, and the reason the bound is tight
there); for a mechanism of another shape it is the epsilon of the Gaussian that fits, not a
bound on its epsilon. At delta = 0 no mu > 0 has a finite epsilon,
so these bounds need delta > 0.

Choosing the threshold on the pairs that are counted would inflate the bound, so
:func:`mu_from_counts` corrects over all K thresholds tried (Bonferroni: each of the 2K
one-sided intervals at ``alpha / (2K)``), and :func:`gaussian_split_mu_bound` picks the
threshold on half the target points and counts on the other half, with no correction.

An ROC of more than :data:`MAX_THRESHOLDS` points is tried at that many of them, spaced
geometrically in false positives from the strict end and in false negatives from the loose
end, where a Gaussian bound peaks: the exact quantiles cost about 25 microseconds a point, so a
million-pair ROC would take half a minute per attack, and K in the correction is then the
number of points tried.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq
from scipy.special import log_ndtr, ndtr, ndtri
from scipy.stats import beta

from truthserum.metrics.roc import RocCurve, roc_curve

_BATCH = 4096
MAX_THRESHOLDS = 4096


def delta_of_gaussian(epsilon: float, mu: float) -> float:
    """The smallest delta at which a mu-GDP mechanism is (epsilon, delta)-DP."""
    if mu <= 0.0:
        return 0.0
    if math.isinf(mu):
        return 1.0
    # the second term in log space: e^epsilon overflows long before the product does
    first = ndtr(-epsilon / mu + mu / 2.0)
    second = math.exp(epsilon + log_ndtr(-epsilon / mu - mu / 2.0))
    return float(max(0.0, first - second))


def epsilon_of_gaussian(mu: float, delta: float) -> float:
    """The epsilon at which a mu-GDP mechanism is (epsilon, delta)-DP, exactly.

    Raises:
        ValueError: ``delta`` outside (0, 1) (at delta 0 any mu > 0 has epsilon infinity).
    """
    if not 0.0 < delta < 1.0:
        raise ValueError(f"a Gaussian-DP bound needs delta in (0, 1), got {delta}")
    if mu <= 0.0 or delta_of_gaussian(0.0, mu) <= delta:
        return 0.0
    if math.isinf(mu):
        return math.inf
    high = max(1.0, mu * mu)
    while delta_of_gaussian(high, mu) > delta:  # delta(epsilon) falls to 0 as epsilon grows
        high *= 2.0
    return float(brentq(lambda eps: delta_of_gaussian(eps, mu) - delta, 0.0, high, xtol=1e-10, rtol=1e-12))


def mu_from_rates(fpr: np.ndarray, fnr: np.ndarray) -> np.ndarray:
    """``Phi^-1(1 - FPR) - Phi^-1(FNR)``: the mu a test with these error rates shows."""
    return ndtri(1.0 - np.asarray(fpr, dtype=np.float64)) - ndtri(np.asarray(fnr, dtype=np.float64))


def clopper_pearson_upper(successes: np.ndarray, trials: np.ndarray, *, significance: float) -> np.ndarray:
    """One-sided exact upper bound on a binomial rate: P[rate > bound] <= ``significance``."""
    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    return np.where(k < n, beta.isf(significance, k + 1.0, np.maximum(n - k, 1.0)), 1.0)


def _mu_at(tp, positives, fp, negatives, significance):
    fpr_high = clopper_pearson_upper(fp, negatives, significance=significance)
    fnr_high = clopper_pearson_upper(positives - tp, positives, significance=significance)
    return mu_from_rates(fpr_high, fnr_high)


def mu_from_counts(
    true_positives: np.ndarray, positives: float, false_positives: np.ndarray, negatives: float,
    *, confidence: float = 0.95,
) -> float:
    """Lower bound on mu from the (TP, FP) counts at K thresholds, the best of them.

    Args:
        true_positives, false_positives: counts at each threshold.
        positives, negatives: members and non-members tested.
        confidence: probability that the bound does not exceed the true mu, after the
            Bonferroni correction over the K thresholds given.

    Returns:
        The bound, at least 0.
    """
    tp = np.atleast_1d(np.asarray(true_positives, dtype=np.float64))
    fp = np.atleast_1d(np.asarray(false_positives, dtype=np.float64))
    if tp.size == 0:
        return 0.0
    significance = (1.0 - confidence) / (2 * tp.size)
    # The interval ends are at least the observed rates and at least their value at zero
    # errors, so mu_from_rates of those floors caps each point's bound: only points whose cap
    # beats the best so far need the beta quantiles.
    fpr_floor = np.maximum(fp / negatives, -math.expm1(math.log(significance) / negatives))
    fnr_floor = np.maximum((positives - tp) / positives, -math.expm1(math.log(significance) / positives))
    ceiling = mu_from_rates(fpr_floor, fnr_floor)
    order = np.argsort(-ceiling, kind="stable")
    best = 0.0
    for start in range(0, order.size, _BATCH):
        batch = order[start:start + _BATCH]
        if ceiling[batch[0]] <= best:
            break
        best = max(best, float(_mu_at(tp[batch], positives, fp[batch], negatives, significance).max()))
    return best


def candidate_points(tp: np.ndarray, fp: np.ndarray, positives: float, negatives: float,
                     limit: int = MAX_THRESHOLDS) -> np.ndarray:
    """Indices of the ROC points to try: all of them up to ``limit``, else about ``limit`` of
    them, the last point with at most c false positives and the first with at most c false
    negatives, for c = 0 and c on two geometric grids from 1 to the non-members and the
    members."""
    if tp.size <= limit:
        return np.arange(tp.size)
    half = limit // 2
    # each grid starts at 0 errors: the strictest point with no false positive, the loosest
    # with no false negative
    fp_grid = np.r_[0.0, np.geomspace(1.0, negatives, half - 1)]
    fn_grid = np.r_[0.0, np.geomspace(1.0, positives, half - 1)]
    by_fp = np.searchsorted(fp, fp_grid, side="right") - 1
    by_fn = np.searchsorted(tp - positives, -fn_grid[::-1], side="left")
    return np.unique(np.clip(np.r_[by_fp, by_fn], 0, tp.size - 1))


def _roc_counts(roc: RocCurve) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(TP, FP, thresholds) at the non-trivial ROC points to try (the end points (0, 0) and
    (1, 1) are left out; :func:`candidate_points` on a long curve)."""
    tp, fp = np.rint(roc.tpr[1:-1] * roc.members), np.rint(roc.fpr[1:-1] * roc.nonmembers)
    chosen = candidate_points(tp, fp, roc.members, roc.nonmembers)
    return tp[chosen], fp[chosen], roc.thresholds[1:-1][chosen]


def gaussian_mu_bound(roc: RocCurve, *, confidence: float = 0.95) -> float:
    """Lower bound on mu over the thresholds of an ROC, Bonferroni-corrected over them."""
    tp, fp, _ = _roc_counts(roc)
    return mu_from_counts(tp, roc.members, fp, roc.nonmembers, confidence=confidence)


def gaussian_split_mu_bound(
    scores: np.ndarray, members: np.ndarray, *, confidence: float = 0.95, rng: np.random.Generator,
) -> float:
    """Lower bound on mu with the threshold chosen on half the target points.

    The columns of the ``(M, T)`` scores (the target points) are split at random in two; the
    threshold whose bound is highest on the first half is applied, alone, to the second, so no
    correction for the choice is needed. 0 when either half lacks members or non-members.
    """
    scores = np.asarray(scores, dtype=np.float64)
    members = np.asarray(members, dtype=bool)
    if scores.ndim == 1:
        scores, members = scores[None, :], members[None, :]
    columns = rng.permutation(scores.shape[1])
    choose, count = columns[: columns.size // 2], columns[columns.size // 2:]
    chosen_members, counted_members = members[:, choose], members[:, count]
    if choose.size == 0 or not (0 < chosen_members.sum() < chosen_members.size) \
            or not (0 < counted_members.sum() < counted_members.size):
        return 0.0
    roc = roc_curve(scores[:, choose], chosen_members)
    tp, fp, thresholds = _roc_counts(roc)
    if tp.size == 0:
        return 0.0
    each = _mu_at(tp, roc.members, fp, roc.nonmembers, (1.0 - confidence) / 2.0)
    threshold = thresholds[int(np.argmax(each))]
    called = scores[:, count] >= threshold
    positives = int(counted_members.sum())
    negatives = counted_members.size - positives
    mu = _mu_at(float((called & counted_members).sum()), positives,
                float((called & ~counted_members).sum()), negatives, (1.0 - confidence) / 2.0)
    return max(0.0, float(mu))
