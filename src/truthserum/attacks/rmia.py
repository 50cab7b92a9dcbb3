"""RMIA: membership inference by comparing a point with population points (Zarifzadeh, Liu,
Shokri, "Low-Cost High-Power Membership Inference Attacks", ICML 2024).

For target model theta and a point p, let P(p | theta) be theta's softmax probability of p's
true label, and P(p) its average over reference models (the target model's shadows):

* online: P(p) = mean of P(p | theta') over every shadow theta';
* offline: only shadows that did not train on p are used, and the missing IN half is
  approximated linearly: P(p) = (1 + a)/2 * mean_OUT P(p | theta') + (1 - a)/2.

The likelihood ratio of target point x against population point z is
LR(x, z) = [P(x | theta) / P(x)] / [P(z | theta) / P(z)], and the score of (theta, x) is the
fraction of population points z with LR(x, z) >= gamma, averaged over the query views. The
population points are pool points that are not targets. The same definition of P(p) is used
for x and for z.

``a`` can be tuned without touching the target model (:func:`tune_offline_a`): some shadows
play the target in turn, scored with the remaining shadows as references, and the ``a`` with
the highest mean AUC on the target points wins. The models are split at random into two halves
and each half's a is tuned on the other half, so the target models of one half share one a
(their scores stay comparable in the pooled ROC; an a per target model would not be). A shadow
budget limits the shadows each score uses, not the models a is tuned on.

Computation (:func:`rmia_scores`): P(p) for target model m averages over m's shadows, which
without a shadow budget are every model (offline: every OUT model) less one or two. The sum
over all of them is taken once per chunk of points and the few left-out terms subtracted for
each m, so scoring M target models costs O(M N) exponentials rather than O(M^2 N); points whose
subtraction would cancel, and every score under a shadow budget, are summed directly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from scipy.special import logsumexp
from scipy.stats import rankdata

from truthserum.errors import SignalsError
from truthserum.logit_store import chunk_points

TUNING_GRID = tuple(np.round(np.linspace(0.0, 1.0, 11), 2))
TUNING_PSEUDO_TARGETS = 8


def log_reference_probability(
    log_p: np.ndarray, group: np.ndarray, *, offline_a: float | None, columns: np.ndarray | None = None,
) -> np.ndarray:
    """log P(p) for every point and query.

    Args:
        log_p: ``(M, P, A)`` log P(p | theta) of every model.
        group: ``(M, P)`` the reference shadows of each point (online: all of them; offline:
            those that did not train on the point). Every column must be non-empty.
        offline_a: None for the online mean; the interpolation parameter a for offline.
        columns: only these points of ``log_p`` and ``group`` (read a chunk at a time, never
            copied whole); None for all.

    Returns:
        ``(P, A)`` log P(p), or ``(len(columns), A)``.
    """
    if columns is None:
        columns = np.arange(log_p.shape[1])
    log_mean = np.empty((columns.size, log_p.shape[2]))
    for start in range(0, columns.size, chunk_points()):  # bounds the (M, chunk, A) temporaries
        part = columns[start:start + chunk_points()]
        log_mean[start:start + part.size] = _direct_log_mean(log_p[:, part], group[:, part])
    if offline_a is None:
        return log_mean
    return _interpolate(log_mean, offline_a)


def _interpolate(log_mean_out: np.ndarray, a: float) -> np.ndarray:
    """log((1 + a)/2 * exp(log_mean_out) + (1 - a)/2), exact at a = 1 (log 0 = -inf)."""
    with np.errstate(divide="ignore"):
        return np.logaddexp(np.log((1.0 + a) / 2.0) + log_mean_out, np.log((1.0 - a) / 2.0))


def fraction_dominated(log_ratio: np.ndarray, num_targets: int, gamma: float) -> np.ndarray:
    """Score of one target model: for each target x, the fraction of population points z
    with LR(x, z) >= gamma, averaged over queries.

    Args:
        log_ratio: ``(P, A)`` log P(p | theta) - log P(p); the first ``num_targets`` rows are
            the targets, the rest the population.
        num_targets: T.
        gamma: the LR threshold.

    Returns:
        ``(T,)`` scores in [0, 1].
    """
    targets, population = log_ratio[:num_targets], log_ratio[num_targets:]
    # LR(x, z) >= gamma  <=>  log_ratio[z] <= log_ratio[x] - log(gamma)
    bound = targets - np.log(gamma)
    per_query = np.empty(targets.shape)
    for a in range(log_ratio.shape[1]):
        ordered = np.sort(population[:, a])
        per_query[:, a] = np.searchsorted(ordered, bound[:, a], side="right")
    return per_query.mean(axis=1) / population.shape[0]


def _check_references(group: np.ndarray, positions: np.ndarray, num_targets: int, target_model: int) -> None:
    """``group`` is ``(M, len(positions))``; ``positions`` index the targets, then the population."""
    counts = group.sum(axis=0)
    if counts.min() < 1:
        column = int(positions[np.argmin(counts)])
        what = (f"the target at position {column} of targets" if column < num_targets
                else f"population point {column - num_targets}")
        raise SignalsError(
            f"rmia: {what} has no reference model when model {target_model} is the target "
            "model (offline needs a shadow that did not train on it)"
        )


ShadowMask = Callable[[int, np.ndarray], np.ndarray]

# A downdated reference sum that keeps less than this fraction of the full sum has lost too many
# digits to cancellation (float64: below about 1e-10 relative); such points are summed directly.
_CANCELLATION = 1e-6


def _log_ratios(
    log_p: np.ndarray, keep: np.ndarray, shadow_mask: ShadowMask, positions: np.ndarray, *,
    num_targets: int, offline_a: Sequence[float] | None, downdate: bool,
) -> Iterator[tuple[int, np.ndarray]]:
    """log P(p | theta_m) - log P(p) of every target model m on the points ``positions``.

    The reference set of point p for target model m is its shadows, and offline only those
    that did not train on p: a subset of a set F that does not depend on m (every model, or
    offline every model that did not train on p). Without a shadow budget that subset is F
    less one or two models (the target model, and on a balanced design one more; see
    :mod:`truthserum.attacks.shadows`), so the sum over it is the sum over F, computed once,
    less those few terms: O(M P) work for all M target models instead of O(M^2 P). Points
    whose sum would lose digits to the subtraction are summed directly, as is everything
    under a shadow budget (``downdate`` False).

    Yields:
        ``(m, (len(positions), A) log-ratios)`` for m = 0, 1, ...
    """
    num_models = log_p.shape[0]
    chunk = log_p[:, positions]  # (M, P', A)
    full = ~keep[:, positions] if offline_a is not None else np.ones((num_models, positions.size), dtype=bool)
    if downdate:
        shift = np.max(np.where(full[:, :, None], chunk, -np.inf), axis=0)
        shift[~np.isfinite(shift)] = 0.0  # a point no model of F saw: checked below, per group
        scaled = np.where(full[:, :, None], np.exp(chunk - shift), 0.0)
        total = scaled.sum(axis=0)
    for m in range(num_models):
        group = shadow_mask(m, positions) & full
        _check_references(group, positions, num_targets, m)
        count = group.sum(axis=0)
        if downdate:
            rows, columns = np.nonzero(full & ~group)  # the few models of F left out
            left_out = np.zeros(total.shape)
            np.add.at(left_out, columns, scaled[rows, columns])
            kept = total - left_out
            lossy = np.nonzero((kept <= _CANCELLATION * total).any(axis=1))[0]
            with np.errstate(divide="ignore"):
                log_mean = np.log(kept) + shift - np.log(count)[:, None]
            if lossy.size:
                log_mean[lossy] = _direct_log_mean(chunk[:, lossy], group[:, lossy])
        else:
            log_mean = _direct_log_mean(chunk, group)
        if offline_a is not None:
            log_mean = _interpolate(log_mean, offline_a[m])
        yield m, chunk[m] - log_mean


def _direct_log_mean(log_p: np.ndarray, group: np.ndarray) -> np.ndarray:
    """log of the mean of exp(``log_p``) (``(M, P, A)``) over the models in ``group`` (``(M, P)``)."""
    masked = np.where(group[:, :, None], log_p, -np.inf)
    return logsumexp(masked, axis=0) - np.log(group.sum(axis=0))[:, None]


def rmia_scores(
    log_p: np.ndarray, keep: np.ndarray, shadow_mask: ShadowMask, *, num_targets: int, gamma: float,
    offline_a: Sequence[float] | None, downdate: bool,
) -> np.ndarray:
    """RMIA scores of every target model on the targets (the first ``num_targets`` columns).

    The population's log-ratios are computed first, a chunk of points at a time, and sorted
    per target model and query; then each chunk of targets is counted against them. Memory
    is the population's ratios, ``(M, A, P - T)``, plus a chunk's temporaries.

    Args:
        log_p: ``(M, P, A)`` log P(p | theta), targets first, then population points.
        keep: ``(M, P)`` membership.
        shadow_mask: ``shadow_mask(m, positions)`` is the ``(M, len(positions))`` bool mask of
            target model m's shadows for those points (positions index the P columns).
        num_targets: T.
        gamma: the LR threshold.
        offline_a: per target model, the offline interpolation parameter; None for online.
        downdate: the shadows are every model but a few (no shadow budget); see
            :func:`_log_ratios`.

    Returns:
        ``(M, T)`` scores in [0, 1].
    """
    num_models, num_points, num_queries = log_p.shape
    ratios = functools.partial(_log_ratios, log_p, keep, shadow_mask, num_targets=num_targets,
                               offline_a=offline_a, downdate=downdate)
    population = np.empty((num_models, num_queries, num_points - num_targets))
    for start in range(num_targets, num_points, chunk_points()):
        positions = np.arange(start, min(start + chunk_points(), num_points))
        for m, ratio in ratios(positions):
            population[m, :, start - num_targets:start - num_targets + positions.size] = ratio.T
    population.sort(axis=2)
    scores = np.empty((num_models, num_targets))
    # LR(x, z) >= gamma  <=>  log_ratio[z] <= log_ratio[x] - log(gamma)
    for start in range(0, num_targets, chunk_points()):
        positions = np.arange(start, min(start + chunk_points(), num_targets))
        for m, ratio in ratios(positions):
            bound = ratio - np.log(gamma)
            dominated = sum(np.searchsorted(population[m, a], bound[:, a], side="right") for a in range(num_queries))
            scores[m, positions] = dominated / num_queries / population.shape[2]
    return scores


def _auc(scores: np.ndarray, members: np.ndarray) -> float:
    """Mann-Whitney AUC with ties counted one half."""
    ranks = rankdata(scores)
    positives = int(members.sum())
    negatives = members.size - positives
    return float((ranks[members].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def tune_offline_a(
    log_p: np.ndarray, keep: np.ndarray, shadows: np.ndarray, *, num_targets: int, gamma: float,
    rng: np.random.Generator, grid: tuple[float, ...] = TUNING_GRID,
) -> float:
    """The offline a that works best among ``shadows`` alone.

    Up to :data:`TUNING_PSEUDO_TARGETS` of the given models play the target in turn, with the
    others as references; the a with the highest mean AUC on the target points wins (ties: the
    smallest a). When no pseudo-target has both members and non-members among the targets
    (a single target, say), the AUC is taken over every point instead. Models outside
    ``shadows`` are never read.

    Args:
        log_p: ``(M, P, A)`` log P(p | theta), targets first.
        keep: ``(M, P)`` membership.
        shadows: ``(M, P)`` bool, the models (per point) that tuning may use.
        num_targets: T.
        gamma: the LR threshold.
        rng: picks the pseudo-targets.
    """
    candidates = np.nonzero(shadows.any(axis=1))[0]
    pseudo_targets = rng.choice(candidates, size=min(TUNING_PSEUDO_TARGETS, candidates.size), replace=False)
    # the targets are what a is for (poisoned targets behave unlike other points); only when
    # they cannot separate members (one target, say) do the population points join in
    for all_points in (False, True):
        aucs = [_pseudo_target_aucs(log_p, keep, shadows, r, num_targets=num_targets, gamma=gamma,
                                    grid=grid, all_points=all_points) for r in pseudo_targets]
        aucs = [row for row in aucs if row is not None]
        if aucs:
            return float(grid[int(np.argmax(np.sum(aucs, axis=0)))])
    raise SignalsError(
        "rmia-offline: cannot tune a: no shadow model has both members and non-members with "
        "references left; set rmia offline_a to a number"
    )


def _pseudo_target_aucs(
    log_p: np.ndarray, keep: np.ndarray, shadows: np.ndarray, r: int, *, num_targets: int,
    gamma: float, grid: tuple[float, ...], all_points: bool,
) -> np.ndarray | None:
    """AUC of offline RMIA at each a of ``grid`` with shadow ``r`` as the target and the other
    ``shadows`` as references, on the targets (or on every point); None if it cannot tell."""
    group = shadows & ~keep
    group[r] = False
    usable = group.sum(axis=0) >= 1  # points with no reference left among few models sit out
    population = num_targets + np.nonzero(usable[num_targets:])[0]
    evaluated = np.nonzero(usable if all_points else usable[:num_targets])[0]
    members = keep[r, evaluated]
    if members.all() or not members.any() or population.size == 0:
        return None
    columns = np.r_[evaluated, population]
    log_mean_out = log_reference_probability(log_p, group, offline_a=None, columns=columns)
    return np.array([
        _auc(fraction_dominated(log_p[r, columns] - _interpolate(log_mean_out, a), evaluated.size, gamma), members)
        for a in grid
    ])
