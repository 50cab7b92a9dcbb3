"""One-run auditing bounds: m canaries, each in the training set by its own fair coin, one model.

The auditor ranks the canaries by score, guesses "in" for the ``k`` highest and "out" for the
``k`` lowest, and abstains on the rest: ``guesses`` = 2k guesses of which ``correct`` are right.

- :func:`epsilon_one_run`: Steinke, Nasr, Jagielski, "Privacy Auditing with One (1) Training
  Run" (NeurIPS 2023): their main theorem with its delta term, as the p-value algorithm of
  their appendix states it. Under (epsilon, delta)-DP,
  ``P[correct >= v] <= beta + 2 m delta alpha`` with ``q = e^eps / (1 + e^eps)``,
  ``beta = P[Binomial(r, q) >= v]`` and ``alpha = max_{1<=i<=v} P[v - i <= Binomial(r, q) < v] / i``;
  the bound is the epsilon at which that p-value reaches ``1 - confidence``.
- :func:`mu_one_run_fdp`: Mahloujifar, Melis, Chaudhuri, "Auditing f-Differential Privacy in
  One Run" (ICML 2025), their recursive test with the Gaussian trade-off curve: it rejects mu-GDP when no mechanism with that curve can put the observed number of
  correct guesses at probability ``1 - confidence``. The largest mu rejected becomes an epsilon
  at the audited delta through :func:`~truthserum.metrics.gaussian_dp.epsilon_of_gaussian`.

Both hold whatever the dependence between canaries, provided the coins are independent and
fair and the guesses are a function of the trained model (and of anything independent of the
coins). Choosing ``k`` after seeing the scores is a choice among K tries, so
:func:`one_run_bounds` takes the best of a fixed grid of K guess counts and states each at
``(1 - confidence) / K`` (Bonferroni).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit, ndtr, ndtri
from scipy.stats import binom


GUESS_FRACTIONS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
"""The grid of one-run guess counts: each fraction of the canaries is guessed, half of it
"in" (the highest scores) and half "out" (the lowest)."""

_MU_CEILING = 40.0  # past this a Gaussian curve is indistinguishable from no privacy at all
_MU_GRID = 64


def _check_counts(canaries: int, guesses: int, correct: int) -> None:
    if not 0 <= correct <= guesses <= canaries or canaries < 1:
        raise ValueError(
            f"need 0 <= correct <= guesses <= canaries and canaries >= 1, got {correct}, {guesses}, {canaries}")


def one_run_p_value(canaries: int, guesses: int, correct: int, *, epsilon: float, delta: float) -> float:
    """Upper bound on P[at least ``correct`` right] under (epsilon, delta)-DP (Steinke et al.)."""
    _check_counts(canaries, guesses, correct)
    q = float(expit(epsilon))
    tail = float(binom.sf(correct - 1, guesses, q))  # P[Binomial >= correct]
    if delta == 0.0 or correct == 0:
        return min(1.0, tail)
    shifts = np.arange(1, correct + 1)
    # P[correct - i <= Binomial < correct] / i, at its largest over i
    alpha = float(np.max((binom.sf(correct - shifts - 1, guesses, q) - tail) / shifts))
    return min(1.0, tail + 2.0 * canaries * delta * alpha)


def epsilon_one_run(
    canaries: int, guesses: int, correct: int, *, delta: float = 0.0, confidence: float = 0.95,
) -> float:
    """The epsilon at which the p-value of ``correct`` of ``guesses`` right guesses on
    ``canaries`` reaches ``1 - confidence``: every smaller epsilon with a smaller p-value is
    refuted (0 when even epsilon 0 is not). Without delta the p-value rises with epsilon and
    this is the largest epsilon refuted; the delta term can make it dip, and the root found is
    then one such crossing, still a sound bound."""
    significance = 1.0 - confidence
    if one_run_p_value(canaries, guesses, correct, epsilon=0.0, delta=delta) > significance:
        return 0.0

    def excess(eps: float) -> float:  # > 0 where (eps, delta) is not refuted
        return one_run_p_value(canaries, guesses, correct, epsilon=eps, delta=delta) - significance

    high = 1.0
    while excess(high) <= 0.0:  # ends: as epsilon grows q -> 1 and the p-value -> 1
        high *= 2.0
    return float(brentq(excess, 0.0, high, xtol=1e-8))


def fdp_rejects(mu: np.ndarray, canaries: int, guesses: int, correct: int, *, confidence: float) -> np.ndarray:
    """Whether the one-run f-DP test rejects mu-GDP, for each mu (Mahloujifar et al.).

    The test follows the least-private way a mu-GDP mechanism could spread probability over the
    number of right guesses: ``right`` and ``wrong`` start at the significance times the
    observed fractions of right and wrong guesses; stepping down from ``correct - 1`` right
    guesses to 0, ``wrong`` rises to at least the Gaussian curve's inverse blow-up of ``right``,
    ``Phi(Phi^-1(right) - mu)``, and ``right`` rises by ``i / (guesses - i)`` times that step.
    If the mass needed exceeds the fraction of canaries guessed, ``guesses / canaries``, no
    mu-GDP mechanism produces the observation at that significance, and mu is rejected.
    """
    _check_counts(canaries, guesses, correct)
    mu = np.atleast_1d(np.asarray(mu, dtype=np.float64))
    significance = 1.0 - confidence
    right = np.full(mu.shape, significance * correct / canaries)
    wrong = np.full(mu.shape, significance * (guesses - correct) / canaries)
    for i in range(correct - 1, -1, -1):
        raised = np.maximum(wrong, ndtr(ndtri(right) - mu))
        step = raised - wrong
        if not step.any():  # nothing moves now, so nothing moves at any smaller i either
            break
        right = np.minimum(right + i / (guesses - i) * step, 1.0)
        wrong = raised
    return right + wrong > guesses / canaries


def mu_one_run_fdp(canaries: int, guesses: int, correct: int, *, confidence: float = 0.95) -> float:
    """The largest mu the one-run f-DP test rejects (0 when it rejects none), rounded down by
    at most 40 / 63^4, about 3e-6.

    The test rejects a set of mu closed downwards (a larger mu is a weaker claim), so the
    boundary is found by four passes over a grid of 64 values, each inside the last's cell.
    """
    low, high = 0.0, _MU_CEILING
    if not fdp_rejects(np.array([1e-9]), canaries, guesses, correct, confidence=confidence)[0]:
        return 0.0
    for _ in range(4):
        grid = np.linspace(low, high, _MU_GRID)
        rejected = fdp_rejects(grid, canaries, guesses, correct, confidence=confidence)
        last = int(np.nonzero(rejected)[0][-1]) if rejected.any() else 0
        if last == grid.size - 1:
            return float(grid[-1])
        low, high = float(grid[last]), float(grid[last + 1])
    return low


@dataclass(frozen=True)
class OneRunBounds:
    """The one-run bounds of a set of canary scores, at the best of the guess grid."""

    canaries: int
    epsilon: float
    """Steinke et al.'s bound."""
    mu_fdp: float
    """Mahloujifar et al.'s bound on mu (its epsilon at a delta: ``epsilon_of_gaussian``)."""
    guesses: int
    correct: int
    """The guesses and right guesses of the grid point behind ``epsilon``."""


def guess_grid(canaries: int, fractions: tuple[float, ...] = GUESS_FRACTIONS) -> list[int]:
    """The distinct even guess counts of the grid for ``canaries`` canaries: each fraction of
    them, rounded to an even count of at least 2 and at most the canaries (fewer than the
    fractions when two round alike, as they do for small m)."""
    half = canaries // 2
    return sorted({2 * min(half, max(1, round(f * canaries / 2))) for f in fractions} - {0})


def guess_counts(scores: np.ndarray, included: np.ndarray, guesses: int) -> int:
    """Right guesses when the ``guesses / 2`` highest scores are called in and as many of the
    lowest are called out (ties broken by position, which the coins cannot influence)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    half = guesses // 2
    included = np.asarray(included, dtype=bool)[order]
    return int(included[:half].sum() + (~included[included.size - half:]).sum()) if half else 0


def one_run_bounds(
    scores: np.ndarray, included: np.ndarray, *, delta: float, confidence: float = 0.95,
    fractions: tuple[float, ...] = GUESS_FRACTIONS,
) -> OneRunBounds:
    """Both one-run bounds of one model's canary scores, the best over the guess grid.

    Args:
        scores: ``(m,)`` attack scores of the canaries, higher meaning "in".
        included: ``(m,)`` bool, which canaries the model trained on (the coins).
        delta: the audited delta of Steinke et al.'s bound.
        confidence: of each bound, after the correction over the grid.
        fractions: the grid of guessed fractions of the canaries.
    """
    canaries = int(np.asarray(scores).size)
    counts = guess_grid(canaries, fractions)
    each = 1.0 - (1.0 - confidence) / max(1, len(counts))
    best = (0.0, 0, 0)
    best_mu = 0.0
    for guesses in counts:
        correct = guess_counts(scores, included, guesses)
        eps = epsilon_one_run(canaries, guesses, correct, delta=delta, confidence=each)
        if eps > best[0] or best[1] == 0:
            best = (eps, guesses, correct)
        best_mu = max(best_mu, mu_one_run_fdp(canaries, guesses, correct, confidence=each))
    return OneRunBounds(canaries=canaries, epsilon=best[0], mu_fdp=best_mu, guesses=best[1], correct=best[2])
