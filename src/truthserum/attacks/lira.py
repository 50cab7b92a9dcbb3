"""Likelihood-ratio membership inference (LiRA) and the global-threshold baseline.

Definitions (Carlini et al., "Membership Inference Attacks From First Principles", S&P 2022,
with the evaluation protocol of their reference code):

* Each model m in turn is the target model; its shadows come from a :class:`ShadowPlan`
  (by default every other model). For target point j, IN = shadows with ``keep[k, j]``,
  OUT = the other shadows.
* For each query a and target point j: location = median of the IN (resp. OUT) phi's,
  scale = their standard deviation (ddof 0).
* Fixed variance: one scale per (target model, query) for all target points, the root mean
  square of every IN (resp. OUT) phi's deviation from its own point's location. This differs
  from the reference code, which uses the standard deviation of all IN values pooled.
* Scales are floored at :data:`SCALE_FLOOR` so that shadows that agree exactly (a single IN
  shadow, say) give a very confident, finite score rather than a division by zero.

Every score is "higher means more likely a member" and is averaged over the A queries.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import log_ndtr

from truthserum.errors import SignalsError
from truthserum.store.logits import position_chunks

SCALE_FLOOR = 1e-6
_LOG_SQRT_2PI = 0.5 * np.log(2.0 * np.pi)

# (target model, positions among the targets) -> (M, len(positions)) usable shadows
MaskFor = Callable[[int, np.ndarray], np.ndarray]


def check_group_sizes(group: np.ndarray, *, name: str, target_model: int, offset: int = 0) -> None:
    """Raise :class:`SignalsError` when some target point has no shadow in ``group`` (whose
    first column is the target at position ``offset``)."""
    lacking = np.nonzero(group.sum(axis=0) < 1)[0]
    if lacking.size:
        raise SignalsError(
            f"{lacking.size} target point(s) (position(s) {first_few(offset + lacking)} of targets) have no "
            f"{name} shadow model when model {target_model} is the target model; every target point needs "
            "at least one IN and one OUT model besides the target model"
        )


def first_few(indices: np.ndarray, shown: int = 5) -> str:
    """``3, 7, 9, 20, 41 and 12 more``: the first few of many indices, for an error line."""
    text = ", ".join(str(int(i)) for i in indices[:shown])
    return text + (f" and {len(indices) - shown} more" if len(indices) > shown else "")


def location_scale(phi: np.ndarray, group: np.ndarray, *, fixed_variance: bool) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian parameters of one group of shadow models for every target point and query.

    Args:
        phi: ``(M, T, A)`` signals of every model on every target point and query.
        group: ``(M, T)`` bool, the shadows in the group for each target point (no empty column).
        fixed_variance: share one scale across target points.

    Returns:
        ``(location, scale)``, each ``(T, A)``. :func:`lira` computes the same a chunk of
        targets at a time.
    """
    moments = _direct_moments(phi, group)
    if not fixed_variance:
        return moments.median, moments.spread()
    pooled = np.sqrt(moments.squares_around_median().sum(axis=0) / moments.count.sum())  # (A,)
    return moments.median, np.broadcast_to(np.maximum(pooled, SCALE_FLOOR)[None, :], moments.median.shape)


def _log_normal_pdf(x: np.ndarray, location: np.ndarray, scale: np.ndarray) -> np.ndarray:
    z = (x - location) / scale
    return -0.5 * z * z - np.log(scale) - _LOG_SQRT_2PI


@dataclass(frozen=True)
class GroupMoments:
    """What LiRA needs of one group of shadows, per target point and query: ``(t, A)`` each,
    and the group size per point ``(t,)``."""

    median: np.ndarray
    mean: np.ndarray
    sum_squares: np.ndarray  # sum of squared deviations from the mean
    count: np.ndarray

    def spread(self) -> np.ndarray:
        """Standard deviation (ddof 0), floored."""
        return np.maximum(np.sqrt(np.maximum(self.sum_squares, 0.0) / self.count[:, None]), SCALE_FLOOR)

    def squares_around_median(self) -> np.ndarray:
        """sum of (phi - median)^2 = sum of (phi - mean)^2 + n (mean - median)^2, ``(t, A)``."""
        return self.sum_squares + self.count[:, None] * (self.mean - self.median) ** 2


def _direct_moments(phi: np.ndarray, group: np.ndarray) -> GroupMoments:
    values = np.where(group[:, :, None], phi, np.nan)
    count = group.sum(axis=0)
    # an empty column gives NaN here and is refused by check_group_sizes before it is used
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nansum(values, axis=0) / count[:, None]
        median = np.nanmedian(values, axis=0)
    return GroupMoments(
        median=median, mean=mean, sum_squares=np.nansum((values - mean[None]) ** 2, axis=0), count=count,
    )


class SortedGroup:
    """One group of models (say, every model that trained on each point) for a chunk of target
    points, sorted once, so that the moments of the group less a few models cost O(t * A).

    LiRA's default shadows are all other models less one: for target model m, each group of
    each point loses at most two models (m itself and the dropped one). Re-sorting the group
    for each of M target models costs O(M^2 T log M); here the group is sorted once per
    chunk and, for each target model, the median is re-indexed around the removed ranks and
    the mean and sum of squares are downdated (Welford's update run backwards). Other shadow
    sets (a shadow budget) fall back to computing the moments directly.
    """

    MAX_REMOVED = 2

    def __init__(self, phi: np.ndarray, group: np.ndarray):
        self.phi, self.group = phi, group
        masked = np.where(group[:, :, None], phi, np.nan)
        order = np.argsort(masked, axis=0, kind="stable")  # NaN (not in the group) last
        self.sorted = np.take_along_axis(masked, order, axis=0)
        self.rank = np.empty(order.shape, dtype=np.int64)
        np.put_along_axis(self.rank, order, np.arange(phi.shape[0])[:, None, None], axis=0)
        self.full = _direct_moments(phi, group)

    def moments(self, shadows: np.ndarray) -> GroupMoments:
        """The moments of ``shadows`` (a subset of the group, ``(M, t)``; no empty column)."""
        removed = self.group & ~shadows
        counts = removed.sum(axis=0)
        if counts.max(initial=0) > self.MAX_REMOVED:
            return _direct_moments(self.phi, self.group & shadows)
        columns = np.arange(removed.shape[1])
        # the lowest and highest removed model of each column (min/max reductions over the model
        # axis vectorize; argmax along it does not, and it ran 30x slower)
        index = np.arange(removed.shape[0], dtype=np.int32)[:, None]
        first = np.where(removed, index, np.int32(removed.shape[0])).min(axis=0) % removed.shape[0]
        second = np.where(removed, index, np.int32(-1)).max(axis=0) % removed.shape[0]
        has = [counts >= 1, counts >= 2]
        removed_rank = [self.rank[first, columns], self.rank[second, columns]]  # (t, A)
        removed_value = [self.phi[first, columns], self.phi[second, columns]]
        count = self.full.count - counts
        # the k-th smallest survivor sits at rank k plus the removed ranks at or below it
        low = np.where(has[1][:, None], np.minimum(*removed_rank), removed_rank[0])
        high = np.maximum(*removed_rank)

        def survivor(k: np.ndarray) -> np.ndarray:
            index = np.broadcast_to(k[:, None], low.shape).copy()
            index += has[0][:, None] & (low <= index)
            index += has[1][:, None] & (high <= index)
            return np.take_along_axis(self.sorted, index[None], axis=0)[0]

        median = 0.5 * (survivor((count - 1) // 2) + survivor(count // 2))
        mean, sum_squares, n = self.full.mean.copy(), self.full.sum_squares.copy(), self.full.count.astype(np.float64)
        for present, value in zip(has, removed_value, strict=True):
            # remove ``value``: n' = n - 1, mean' = mean + (mean - value) / n',
            # S' = S - (value - mean)(value - mean')
            n_after = np.where(present, n - 1, n)[:, None]
            new_mean = np.where(present[:, None], mean + (mean - value) / np.maximum(n_after, 1), mean)
            sum_squares = np.where(present[:, None], sum_squares - (value - mean) * (value - new_mean), sum_squares)
            mean, n = new_mean, n_after[:, 0]
        # a downdate can leave a rounding error below zero where the survivors agree
        return GroupMoments(median=median, mean=mean, sum_squares=np.maximum(sum_squares, 0.0), count=count)


def lira(
    phi: np.ndarray, keep: np.ndarray, mask_for: MaskFor, *, online: bool, fixed_variance: bool,
    chunk: int | None = None,
) -> np.ndarray:
    """LiRA scores of every (target model, target point) pair.

    Args:
        phi: ``(M, T, A)`` signals on the target points.
        keep: ``(M, T)`` membership of the target points.
        mask_for: the usable shadows of a target model for some target positions.
        online: online (IN and OUT Gaussians) or offline (one-sided test against OUT).
        fixed_variance: use one scale per group for all target points.
        chunk: target points processed together; bounds the temporaries to ``(M, chunk, A)``
            (default :func:`~truthserum.store.logits.chunk_points`).

    Returns:
        ``(M, T)`` scores, higher means member. Online: mean over queries of
        log N(phi; mu_in, s_in) - log N(phi; mu_out, s_out). Offline: mean over queries of
        log Phi((phi - mu_out) / s_out), with ``log_ndtr`` so that phi far below the OUT
        distribution stays finite.
    """
    num_models, num_targets, num_queries = phi.shape
    groups = [("OUT", False)] + ([("IN", True)] if online else [])
    chunks = position_chunks(num_targets, chunk)

    def each_group(columns: np.ndarray):
        """(target model, {group: moments}) for every target model on these columns."""
        member = keep[:, columns]
        sorted_groups = {name: SortedGroup(phi[:, columns], member if is_in else ~member)
                         for name, is_in in groups}
        for m in range(num_models):
            mask = mask_for(m, columns)
            moments = {}
            for name, is_in in groups:
                shadows = mask & (member if is_in else ~member)
                check_group_sizes(shadows, name=name, target_model=m, offset=int(columns[0]))
                moments[name] = sorted_groups[name].moments(shadows)
            yield m, moments

    pooled = None
    if fixed_variance:  # one scale per (target model, group, query), from every target point
        totals = {name: np.zeros((num_models, num_queries)) for name, _ in groups}
        counts = {name: np.zeros(num_models) for name, _ in groups}
        for columns in chunks:
            for m, moments in each_group(columns):
                for name, _ in groups:
                    totals[name][m] += moments[name].squares_around_median().sum(axis=0)
                    counts[name][m] += moments[name].count.sum()
        pooled = {name: np.maximum(np.sqrt(totals[name] / counts[name][:, None]), SCALE_FLOOR)
                  for name, _ in groups}

    scores = np.empty((num_models, num_targets))
    for columns in chunks:
        for m, moments in each_group(columns):
            def location_and_scale(name: str) -> tuple[np.ndarray, np.ndarray]:
                scale = (np.broadcast_to(pooled[name][m], moments[name].median.shape)
                         if pooled is not None else moments[name].spread())
                return moments[name].median, scale

            x = phi[m, columns]
            mu_out, s_out = location_and_scale("OUT")
            if online:
                mu_in, s_in = location_and_scale("IN")
                ratio = _log_normal_pdf(x, mu_in, s_in) - _log_normal_pdf(x, mu_out, s_out)
            else:
                ratio = log_ndtr((x - mu_out) / s_out)
            scores[m, columns] = ratio.mean(axis=-1)
    return scores


def global_threshold(phi: np.ndarray) -> np.ndarray:
    """Mean over queries of phi: the same threshold for every point, no shadow models."""
    return phi.mean(axis=-1)
