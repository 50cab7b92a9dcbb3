"""Empirical privacy lower bound: the smallest epsilon an attack's ROC is consistent with.

A membership test against an (epsilon, delta)-DP training algorithm cannot do better than

    TPR <= e^eps * FPR + delta    and    TNR <= e^eps * FNR + delta

at any threshold (Kairouz, Oh, Viswanath 2015). Read backwards, every ROC point gives a lower
bound on epsilon, ``ln((TPR - delta) / FPR)`` and ``ln((TNR - delta) / FNR)``. Measured rates
are estimates, so each is replaced by the end of its confidence interval that makes the bound
smaller: the lower end of the TPR (hence the upper end of the FNR) and the upper end of the
FPR (hence the lower end of the TNR). This is the DP-auditing bound of Jagielski, Ullman and
Oprea (NeurIPS 2020) and Nasr, Song, Thakurta, Papernot and Carlini (IEEE S&P 2021).

How honest it is:

- Taking the best of K thresholds is a statement about all K at once, so the 2K binomial
  intervals (TPR and FPR at each of the K ROC points) are Bonferroni-corrected: each is a
  two-sided Clopper-Pearson interval at level ``1 - alpha / (2K)``, ``alpha = 1 - confidence``.
  By the union bound all 2K hold together with probability at least ``confidence``, and then
  the bound is at most the true epsilon.
- Every (target model, target point) pair is treated as an independent Bernoulli trial. In a
  truthserum run the pairs of one target point share that point, and the models share most of
  their training data, so they are not independent and the bound is optimistic by an amount
  this module cannot measure. It is an audit of the attack's evidence, not a certificate.
- The thresholds of an ROC are the observed scores themselves. The correction counts them but
  does not account for their being read off the same data; for a clean statement pick the
  thresholds on held-out pairs and call :func:`epsilon_from_counts` with the counts on fresh
  pairs, K then being the number of thresholds tried.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.stats import beta

from truthserum.metrics.roc import RocCurve

_BATCH = 1024
_CEILING_CHUNK = 1 << 18


def clopper_pearson(
    successes: np.ndarray, trials: np.ndarray, *, confidence: float
) -> tuple[np.ndarray, np.ndarray]:
    """Exact two-sided binomial interval for a rate, from ``successes`` out of ``trials``.

    Exact (the beta quantiles of the binomial tail) rather than a normal approximation because
    the rates that matter here sit at the edges: a handful of false positives among thousands.

    Args:
        successes: counts, 0 <= successes <= trials.
        trials: counts, at least 1.
        confidence: two-sided coverage, in (0, 1).

    Returns:
        The lower and upper ends; 0 is the lower end for no successes, 1 the upper end for all.
    """
    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    tail = (1.0 - confidence) / 2.0
    lower = np.where(k > 0, beta.ppf(tail, np.maximum(k, 1.0), n - k + 1.0), 0.0)
    upper = np.where(k < n, beta.isf(tail, k + 1.0, np.maximum(n - k, 1.0)), 1.0)
    return lower, upper


def _log_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``ln(numerator / denominator)`` where both are positive, -inf elsewhere."""
    defined = (numerator > 0) & (denominator > 0)
    safe = np.where(defined, numerator, 1.0) / np.where(defined, denominator, 1.0)
    return np.where(defined, np.log(safe), -np.inf)


def _epsilon_at(tp, positives, fp, negatives, *, delta: float, confidence: float) -> np.ndarray:
    """The bound of each point: both inequalities with the pessimistic interval ends."""
    tpr_low, _ = clopper_pearson(tp, positives, confidence=confidence)
    _, fpr_high = clopper_pearson(fp, negatives, confidence=confidence)
    return np.maximum(
        _log_ratio(tpr_low - delta, fpr_high),               # TPR <= e^eps FPR + delta
        _log_ratio((1.0 - fpr_high) - delta, 1.0 - tpr_low),  # TNR <= e^eps FNR + delta
    )


def _epsilon_ceiling(tp, positives, fp, negatives, *, delta: float, confidence: float) -> np.ndarray:
    """A cheap upper bound on :func:`_epsilon_at` at every point.

    The Clopper-Pearson lower end never exceeds the observed rate and the upper end is never
    below it, nor below its value at zero successes, ``1 - tail^(1/n)``. Only points whose
    ceiling beats the best exact bound so far need the beta quantiles.
    """
    tail = (1.0 - confidence) / 2.0
    fpr_floor = np.maximum(fp / negatives, -np.expm1(np.log(tail) / negatives))
    fnr_floor = np.maximum((positives - tp) / positives, -np.expm1(np.log(tail) / positives))
    return np.maximum(
        _log_ratio(tp / positives - delta, fpr_floor),
        _log_ratio((negatives - fp) / negatives - delta, fnr_floor),
    )


def epsilon_from_counts(
    true_positives: np.ndarray,
    positives: np.ndarray,
    false_positives: np.ndarray,
    negatives: np.ndarray,
    *,
    delta: float = 0.0,
    confidence: float = 0.95,
) -> float:
    """Epsilon lower bound from K (TP, P, FP, N) count tuples, one per threshold.

    Each of the 2K rates gets a Clopper-Pearson interval at level ``1 - (1 - confidence)/(2K)``
    (Bonferroni), so the maximum over the K thresholds holds at ``confidence``. See the
    module docstring for what the statement assumes.

    Args:
        true_positives: members called members at each threshold.
        positives: members tested (a scalar or one per threshold).
        false_positives: non-members called members at each threshold.
        negatives: non-members tested (a scalar or one per threshold).
        delta: the delta of the (epsilon, delta) claim being audited, in [0, 1).
        confidence: probability that the returned bound does not exceed the true epsilon.

    Returns:
        ``max(0, max_i eps_i)``; 0 when no threshold shows evidence against epsilon = 0.

    Raises:
        ValueError: counts out of range or an option out of range.
    """
    tp, p, fp, n = (np.atleast_1d(np.asarray(a, dtype=np.float64))
                    for a in (true_positives, positives, false_positives, negatives))
    tp, p, fp, n = np.broadcast_arrays(tp, p, fp, n)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"delta must be in [0, 1), got {delta}")
    if (p < 1).any() or (n < 1).any() or (tp < 0).any() or (fp < 0).any() or (tp > p).any() \
            or (fp > n).any():
        raise ValueError("counts must satisfy 0 <= true positives <= positives, "
                         "0 <= false positives <= negatives, with positives and negatives >= 1")
    tp, p, fp, n = (a.ravel() for a in (tp, p, fp, n))
    return _best_epsilon(tp.size, lambda i: (tp[i], p[i], fp[i], n[i]), delta=delta, confidence=confidence)


Counts = Callable[[slice | np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]


def _best_epsilon(size: int, counts: Counts, *, delta: float, confidence: float) -> float:
    """The bound over K = ``size`` thresholds whose (TP, P, FP, N) ``counts(index)`` gives for
    any slice or index array. Counts are fetched a chunk at a time, so an ROC of millions of
    points needs one float per point (its ceiling) and nothing else of that size."""
    if size == 0:
        return 0.0
    each = 1.0 - (1.0 - confidence) / (2 * size)
    ceiling = np.empty(size)
    for start in range(0, size, _CEILING_CHUNK):
        part = slice(start, start + _CEILING_CHUNK)
        ceiling[part] = _epsilon_ceiling(*counts(part), delta=delta, confidence=each)
    # Exact bounds only where the ceiling can beat the best so far: first the highest ceiling
    # (usually at or near the answer), then a scan in chunks, so that no sorted copy of the
    # ceilings is needed. A skipped point has exact <= ceiling <= best, so the result is the
    # maximum over every point.
    top = int(np.argmax(ceiling))
    if ceiling[top] <= 0.0:
        return 0.0
    best = max(0.0, float(_epsilon_at(*counts(slice(top, top + 1)), delta=delta, confidence=each).max()))
    for start in range(0, size, _CEILING_CHUNK):
        candidates = start + np.flatnonzero(ceiling[start:start + _CEILING_CHUNK] > best)
        for batch in np.array_split(candidates, max(1, candidates.size // _BATCH)):
            batch = batch[ceiling[batch] > best]
            if batch.size:
                best = max(best, float(_epsilon_at(*counts(batch), delta=delta, confidence=each).max()))
    return best


def epsilon_lower_bound(roc: RocCurve, *, delta: float = 0.0, confidence: float = 0.95) -> float:
    """Epsilon lower bound from every non-trivial point of an attack's ROC.

    The end points (0, 0) and (1, 1) say nothing and are left out, so K is the number of ROC
    points less two. Counts are recovered from the rates and the member/non-member totals.

    Args:
        roc: the pooled ROC of the attack (:func:`truthserum.metrics.roc.roc_curve`).
        delta: the delta of the claim being audited, in [0, 1).
        confidence: probability that the bound does not exceed the true epsilon, if pairs
            were independent trials (see the module docstring).

    Returns:
        The bound, at least 0.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"delta must be in [0, 1), got {delta}")
    tpr, fpr = roc.tpr[1:-1], roc.fpr[1:-1]
    positives, negatives = np.float64(roc.members), np.float64(roc.nonmembers)

    def counts(index):  # recovered from the rates, a chunk at a time
        return np.rint(tpr[index] * positives), positives, np.rint(fpr[index] * negatives), negatives

    return _best_epsilon(tpr.size, counts, delta=delta, confidence=confidence)
