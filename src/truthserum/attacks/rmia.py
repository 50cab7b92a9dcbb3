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
"""

from __future__ import annotations

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
        chosen = group[:, part]
        masked = np.where(chosen[:, :, None], log_p[:, part], -np.inf)
        log_mean[start:start + part.size] = logsumexp(masked, axis=0) - np.log(chosen.sum(axis=0))[:, None]
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


def _check_references(group: np.ndarray, num_targets: int, target_model: int) -> None:
    counts = group.sum(axis=0)
    if counts.min() < 1:
        column = int(np.argmin(counts))
        what = (f"the target at position {column} of targets" if column < num_targets
                else f"population point {column - num_targets}")
        raise SignalsError(
            f"rmia: {what} has no reference model when model {target_model} is the target "
            "model (offline needs a shadow that did not train on it)"
        )


def rmia_row(
    log_p: np.ndarray, keep: np.ndarray, mask: np.ndarray, *, target_model: int, num_targets: int,
    gamma: float, offline_a: float | None,
) -> np.ndarray:
    """RMIA scores of one target model on the targets (the first ``num_targets`` columns).

    Args:
        log_p: ``(M, P, A)`` log P(p | theta), targets first, then population points.
        keep: ``(M, P)`` membership.
        mask: ``(M, P)`` the target model's shadows for each point.
        target_model: whose scores.
        num_targets: T.
        gamma: the LR threshold.
        offline_a: None for online, else the offline interpolation parameter.

    Returns:
        ``(T,)`` scores in [0, 1].
    """
    group = mask if offline_a is None else mask & ~keep
    _check_references(group, num_targets, target_model)
    log_reference = log_reference_probability(log_p, group, offline_a=offline_a)
    return fraction_dominated(log_p[target_model] - log_reference, num_targets, gamma)


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
