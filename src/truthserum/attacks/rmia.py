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
without a shadow budget are every model (offline: every OUT model) less at most two. The sum
over all of them is taken once per chunk of points and the few left-out terms subtracted for
each m, so scoring M target models costs O(M N) exponentials rather than O(M^2 N); points whose
subtraction would cancel, and every score under a shadow budget, are summed directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.special import logsumexp
from scipy.stats import rankdata

from truthserum.attacks.lira import first_few
from truthserum.errors import SignalsError
from truthserum.store.logits import chunk_points

TUNING_GRID = tuple(np.round(np.linspace(0.0, 1.0, 11), 2))
TUNING_PSEUDO_TARGETS = 8


def log_reference_probability(log_p: np.ndarray, group: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """log of the mean of P(p | theta) over ``group`` for the points ``columns``.

    Args:
        log_p: ``(M, P, A)`` log P(p | theta) of every model.
        group: ``(M, P)`` the reference models of each point. Every column must be non-empty.
        columns: the points (read a chunk at a time, never copied whole).

    Returns:
        ``(len(columns), A)``.
    """
    log_mean = np.empty((columns.size, log_p.shape[2]))
    for start in range(0, columns.size, chunk_points()):  # bounds the (M, chunk, A) temporaries
        part = columns[start:start + chunk_points()]
        log_mean[start:start + part.size] = _direct_log_mean(log_p[:, part], group[:, part])
    return log_mean


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
    lacking = positions[group.sum(axis=0) < 1]
    if lacking.size:
        targets, population = lacking[lacking < num_targets], lacking[lacking >= num_targets] - num_targets
        what = [f"{len(found)} {kind} ({where} {first_few(found)})" for found, kind, where in (
            (targets, "target point(s)", "position(s) of targets"), (population, "population point(s)", "number(s)"),
        ) if len(found)]
        raise SignalsError(
            f"rmia: {' and '.join(what)} have no reference model when model {target_model} is the target "
            "model (offline needs a shadow that did not train on the point)"
        )


ShadowMask = Callable[[int, np.ndarray], np.ndarray]

# A downdated reference sum that keeps less than this fraction of the full sum has lost too many
# digits to cancellation (the sum of M terms carries an error of up to about M * 1e-16 of the
# total, so what remains above the threshold keeps a relative error below M * 1e-10); such
# points are summed directly.
_CANCELLATION = 1e-6


def _direct_log_mean(log_p: np.ndarray, group: np.ndarray) -> np.ndarray:
    """log of the mean of exp(``log_p``) (``(M, P, A)``) over the models in ``group`` (``(M, P)``)."""
    masked = np.where(group[:, :, None], log_p, -np.inf)
    return logsumexp(masked, axis=0) - np.log(group.sum(axis=0))[:, None]


def _point_slices(num_points: int) -> list[slice]:
    """The chunks of :func:`~truthserum.store.logits.chunk_points` points every RMIA pass
    visits, as slices (views of ``log_p``, never copies of it)."""
    return [slice(start, min(start + chunk_points(), num_points)) for start in range(0, num_points, chunk_points())]


def _candidates(keep: np.ndarray, part: slice, *, offline: bool) -> np.ndarray:
    """``(M, len(part))``: the models any target model's references may come from, every model
    online and offline those that did not train on the point."""
    return ~keep[:, part] if offline else np.ones((keep.shape[0], part.stop - part.start), dtype=bool)


def _shifted_totals(log_p: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per point and query, the largest log P(p | theta) among ``candidates`` (``(M, P)``) and
    the sum of P(p | theta) over them divided by its exponential: ``(P, A)`` each."""
    shift = np.max(np.where(candidates[:, :, None], log_p, -np.inf), axis=0)
    shift[~np.isfinite(shift)] = 0.0  # a point with no candidate: refused per target model
    total = np.where(candidates[:, :, None], np.exp(log_p - shift), 0.0).sum(axis=0)
    return shift, total


def _log_mean(
    log_p: np.ndarray, group: np.ndarray, candidates: np.ndarray,
    totals: tuple[np.ndarray, np.ndarray] | None,
) -> np.ndarray:
    """log of the mean of P(p | theta) over ``group``, a subset of ``candidates``, for a chunk
    of points: ``log_p`` is ``(M, P, A)``, the masks ``(M, P)``; returns ``(P, A)``.

    With ``totals`` (:func:`_shifted_totals` of the candidates) the sum over the group is the
    candidates' total less the few candidates the group leaves out; without, or where that
    subtraction cancels, it is summed directly."""
    if totals is None:
        return _direct_log_mean(log_p, group)
    shift, total = totals
    rows, columns = np.nonzero(candidates & ~group)
    left_out = np.zeros(total.shape)
    np.add.at(left_out, columns, np.exp(log_p[rows, columns] - shift[columns]))
    kept = total - left_out
    with np.errstate(divide="ignore"):
        log_mean = np.log(kept) + shift - np.log(group.sum(axis=0))[:, None]
    lossy = np.nonzero((kept <= _CANCELLATION * total).any(axis=1))[0]
    if lossy.size:
        log_mean[lossy] = _direct_log_mean(log_p[:, lossy], group[:, lossy])
    return log_mean


def target_model_log_ratios(
    log_p: np.ndarray, keep: np.ndarray, shadow_mask: ShadowMask, target_model: int, *,
    num_targets: int, offline_a: float | None, totals: list[tuple[np.ndarray, np.ndarray]] | None,
) -> np.ndarray:
    """log P(p | theta_m) - log P(p) of target model m on every point, a chunk at a time.

    Args:
        log_p: ``(M, P, A)`` log P(p | theta), targets first, then population points.
        keep: ``(M, P)`` membership.
        shadow_mask: ``shadow_mask(m, positions)`` is the ``(M, len(positions))`` bool mask of
            target model m's shadows for those points (positions index the P columns).
        target_model: m.
        num_targets: T (for error messages).
        offline_a: the offline interpolation parameter; None for online.
        totals: per chunk of :func:`_point_slices`, :func:`_shifted_totals` over every model
            (offline: every model that did not train on the point); None to sum each point's
            references directly.

    Returns:
        ``(P, A)`` log-ratios.
    """
    _, num_points, num_queries = log_p.shape
    ratios = np.empty((num_points, num_queries))
    for index, part in enumerate(_point_slices(num_points)):
        positions = np.arange(part.start, part.stop)
        candidates = _candidates(keep, part, offline=offline_a is not None)
        group = shadow_mask(target_model, positions) & candidates
        _check_references(group, positions, num_targets, target_model)
        log_mean = _log_mean(log_p[:, part], group, candidates, None if totals is None else totals[index])
        if offline_a is not None:
            log_mean = _interpolate(log_mean, offline_a)
        ratios[part] = log_p[target_model, part] - log_mean
    return ratios


def rmia_scores(
    log_p: np.ndarray, keep: np.ndarray, shadow_mask: ShadowMask, *, num_targets: int, gamma: float,
    offline_a: Sequence[float] | None, downdate: bool,
) -> np.ndarray:
    """RMIA scores of every target model on the targets (the first ``num_targets`` columns).

    Without a shadow budget (``downdate``), target model m's shadows are every model
    (offline: every OUT model of the point) less at most two: m itself, and on a balanced
    design one more (:mod:`truthserum.attacks.shadows`). The sum over all of them is then
    taken once per point, and for each m only the left-out terms are subtracted: O(M N)
    exponentials for all M target models instead of O(M^2 N). Beyond ``log_p`` this holds two
    ``(P, A)`` arrays and one model's ratios at a time.

    Args:
        log_p: ``(M, P, A)`` log P(p | theta), targets first, then population points.
        keep: ``(M, P)`` membership.
        shadow_mask: ``shadow_mask(m, positions)`` is the ``(M, len(positions))`` bool mask of
            target model m's shadows for those points (positions index the P columns).
        num_targets: T.
        gamma: the LR threshold.
        offline_a: per target model, the offline interpolation parameter; None for online.
        downdate: the shadows are every model but a few (no shadow budget).

    Returns:
        ``(M, T)`` scores in [0, 1].
    """
    num_models, num_points, _ = log_p.shape
    totals = None
    if downdate:
        offline = offline_a is not None
        totals = [_shifted_totals(log_p[:, part], _candidates(keep, part, offline=offline))
                  for part in _point_slices(num_points)]
    scores = np.empty((num_models, num_targets))
    for m in range(num_models):
        ratios = target_model_log_ratios(
            log_p, keep, shadow_mask, m, num_targets=num_targets,
            offline_a=None if offline_a is None else offline_a[m], totals=totals,
        )
        scores[m] = fraction_dominated(ratios, num_targets, gamma)
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
    log_mean_out = log_reference_probability(log_p, group, columns)
    return np.array([
        _auc(fraction_dominated(log_p[r, columns] - _interpolate(log_mean_out, a), evaluated.size, gamma), members)
        for a in grid
    ])
