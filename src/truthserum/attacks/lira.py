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

from collections.abc import Callable

import numpy as np
from scipy.special import log_ndtr

from truthserum.errors import SignalsError

SCALE_FLOOR = 1e-6
_LOG_SQRT_2PI = 0.5 * np.log(2.0 * np.pi)

MaskFor = Callable[[int], np.ndarray]  # target model -> (M, T) usable shadows


def check_group_sizes(group: np.ndarray, *, name: str, target_model: int) -> None:
    """Raise :class:`SignalsError` when some target point has no shadow in ``group``."""
    counts = group.sum(axis=0)
    if counts.min() < 1:
        j = int(np.argmin(counts))
        raise SignalsError(
            f"the target at position {j} of targets has no {name} shadow model when model "
            f"{target_model} is the target model; every target point needs at least one IN and one "
            "OUT model besides the target model"
        )


def location_scale(phi: np.ndarray, group: np.ndarray, *, fixed_variance: bool) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian parameters of one group of shadow models for every target point and query.

    Args:
        phi: ``(M, T, A)`` signals of every model on every target point and query.
        group: ``(M, T)`` bool, the shadows in the group for each target point (no empty column).
        fixed_variance: share one scale across target points.

    Returns:
        ``(location, scale)``, each ``(T, A)``.
    """
    values = np.where(group[:, :, None], phi, np.nan)
    location = np.nanmedian(values, axis=0)
    if fixed_variance:
        squared = (values - location[None]) ** 2
        spread = np.sqrt(np.nanmean(squared.reshape(-1, phi.shape[2]), axis=0))  # (A,)
        spread = np.broadcast_to(spread[None, :], location.shape)
    else:
        spread = np.nanstd(values, axis=0)
    return location, np.maximum(spread, SCALE_FLOOR)


def _log_normal_pdf(x: np.ndarray, location: np.ndarray, scale: np.ndarray) -> np.ndarray:
    z = (x - location) / scale
    return -0.5 * z * z - np.log(scale) - _LOG_SQRT_2PI


def lira(
    phi: np.ndarray, keep: np.ndarray, mask_for: MaskFor, *, online: bool, fixed_variance: bool
) -> np.ndarray:
    """LiRA scores of every (target model, target point) pair.

    Args:
        phi: ``(M, T, A)`` signals on the target points.
        keep: ``(M, T)`` membership of the target points.
        mask_for: the usable shadows of each target model, ``(M, T)`` bool.
        online: online (IN and OUT Gaussians) or offline (one-sided test against OUT).
        fixed_variance: use one scale per group for all target points.

    Returns:
        ``(M, T)`` scores, higher means member. Online: mean over queries of
        log N(phi; mu_in, s_in) - log N(phi; mu_out, s_out). Offline: mean over queries of
        log Phi((phi - mu_out) / s_out), with ``log_ndtr`` so that phi far below the OUT
        distribution stays finite.
    """
    scores = np.empty(keep.shape)
    for m in range(phi.shape[0]):
        mask = mask_for(m)
        out_group = mask & ~keep
        check_group_sizes(out_group, name="OUT", target_model=m)
        mu_out, s_out = location_scale(phi, out_group, fixed_variance=fixed_variance)
        if online:
            in_group = mask & keep
            check_group_sizes(in_group, name="IN", target_model=m)
            mu_in, s_in = location_scale(phi, in_group, fixed_variance=fixed_variance)
            ratio = _log_normal_pdf(phi[m], mu_in, s_in) - _log_normal_pdf(phi[m], mu_out, s_out)
        else:
            ratio = log_ndtr((phi[m] - mu_out) / s_out)
        scores[m] = ratio.mean(axis=-1)
    return scores


def global_threshold(phi: np.ndarray) -> np.ndarray:
    """Mean over queries of phi: the same threshold for every point, no shadow models."""
    return phi.mean(axis=-1)
