"""Likelihood-ratio membership inference (LiRA) and the global-threshold baseline.

Definitions (Carlini et al., "Membership Inference Attacks From First Principles", S&P 2022,
with the evaluation protocol of their reference code):

* Leave-one-out: each model m in turn is the target model; the other M-1 are shadows. For
  target point j, IN = shadows with ``keep[k, j]``, OUT = the other shadows.
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

import numpy as np
from scipy.special import log_ndtr

from truthserum.errors import SignalsError

SCALE_FLOOR = 1e-6
_LOG_SQRT_2PI = 0.5 * np.log(2.0 * np.pi)


def loo_location_scale(
    phi: np.ndarray, group: np.ndarray, *, fixed_variance: bool, name: str = "IN"
) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out Gaussian parameters of one group of shadow models.

    Args:
        phi: ``(M, T, A)`` signals of every model on every target point and query.
        group: ``(M, T)`` bool, the models that belong to the group for each target point
            (``keep`` for IN, ``~keep`` for OUT).
        fixed_variance: share one scale across target points.
        name: the group's name for error messages.

    Returns:
        ``(location, scale)``, each ``(M, T, A)``: entry [m, j, a] uses every shadow but m.

    Raises:
        SignalsError: some target point has no shadow in the group for some target model.
    """
    num_models = phi.shape[0]
    counts = group.sum(axis=0)[None, :] - group  # (M, T): group size without model m
    if counts.min() < 1:
        m, j = np.argwhere(counts < 1)[0]
        raise SignalsError(
            f"the target at position {j} of targets has no {name} shadow model when model {m} "
            "is the target model; "
            "every target point needs at least one IN and one OUT model besides the target model"
        )
    location = np.empty_like(phi)
    scale = np.empty_like(phi)
    for m in range(num_models):
        shadows = np.arange(num_models) != m
        values = np.where(group[shadows][:, :, None], phi[shadows], np.nan)  # (M-1, T, A)
        loc = np.nanmedian(values, axis=0)
        if fixed_variance:
            squared = (values - loc[None]) ** 2
            spread = np.sqrt(np.nanmean(squared.reshape(-1, phi.shape[2]), axis=0))  # (A,)
            spread = np.broadcast_to(spread[None, :], loc.shape)
        else:
            spread = np.nanstd(values, axis=0)
        location[m] = loc
        scale[m] = np.maximum(spread, SCALE_FLOOR)
    return location, scale


def _log_normal_pdf(x: np.ndarray, location: np.ndarray, scale: np.ndarray) -> np.ndarray:
    z = (x - location) / scale
    return -0.5 * z * z - np.log(scale) - _LOG_SQRT_2PI


def lira_online(phi: np.ndarray, keep: np.ndarray, *, fixed_variance: bool = False) -> np.ndarray:
    """Mean over queries of log N(phi; mu_in, s_in) - log N(phi; mu_out, s_out).

    Args:
        phi: ``(M, T, A)`` signals on the target points.
        keep: ``(M, T)`` membership of the target points.
        fixed_variance: use one scale per group for all target points.

    Returns:
        ``(M, T)`` scores, higher means member.
    """
    mu_in, s_in = loo_location_scale(phi, keep, fixed_variance=fixed_variance, name="IN")
    mu_out, s_out = loo_location_scale(phi, ~keep, fixed_variance=fixed_variance, name="OUT")
    ratio = _log_normal_pdf(phi, mu_in, s_in) - _log_normal_pdf(phi, mu_out, s_out)
    return ratio.mean(axis=-1)


def lira_offline(phi: np.ndarray, keep: np.ndarray, *, fixed_variance: bool = False) -> np.ndarray:
    """Mean over queries of log Phi((phi - mu_out) / s_out): a one-sided test against OUT only.

    Uses ``log_ndtr`` so that phi far below the OUT distribution stays finite.
    """
    mu_out, s_out = loo_location_scale(phi, ~keep, fixed_variance=fixed_variance, name="OUT")
    return log_ndtr((phi - mu_out) / s_out).mean(axis=-1)


def global_threshold(phi: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Mean over queries of phi: the same threshold for every point, no shadow models."""
    del keep  # uniform signature with the shadow-model attacks
    return phi.mean(axis=-1)
