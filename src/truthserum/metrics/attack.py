"""One attack's measurements: AUC, TPR at each FPR level with its support, the epsilon lower
bounds, and the bootstrap's intervals (:class:`AttackMetrics`, computed by :func:`evaluate`)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from truthserum.metrics.bootstrap import BOOTSTRAP_SEED, BootstrapIntervals, bootstrap_intervals
from truthserum.metrics.bounds import DEFAULT_DELTA, EpsilonBounds, epsilon_bounds
from truthserum.metrics.epsilon import epsilon_lower_bound
from truthserum.metrics.roc import FPR_LEVELS, RocCurve, area_under_curve, low_support, roc_curve, tpr_at_fpr


@dataclass(frozen=True)
class AttackMetrics:
    """One attack's ROC summary with its uncertainty.

    ``auc_ci`` and ``tpr_at_fpr_ci`` are None when no bootstrap was run (``resamples`` 0).
    ``low_support[level]`` is True when fewer than 10 non-members could be false positives at
    that level, so its TPR rests on a handful of pairs whatever its interval says.
    ``epsilon_lower_bound`` is the Clopper-Pearson bound; ``bounds`` holds it beside the
    others (:mod:`truthserum.metrics.bounds`), None where only the ROC was summarized.
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
    bounds: EpsilonBounds | None = None

    # the keys of :meth:`to_dict`, which :meth:`from_dict` reads back
    DICT_KEYS = (
        "auc", "auc_ci", "tpr_at_fpr", "tpr_at_fpr_ci", "low_support", "members", "nonmembers",
        "epsilon_lower_bound", "delta", "confidence", "resamples", "degenerate_resamples", "epsilon_bounds",
    )

    def to_dict(self) -> dict:
        """Plain Python types only, so the dict goes straight into ``json.dump``."""
        def pair(interval):
            return None if interval is None else [float(interval[0]), float(interval[1])]

        data = {
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
        if self.bounds is not None:  # results older than the bounds read back as they were
            data["epsilon_bounds"] = self.bounds.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> AttackMetrics:
        """The inverse of :meth:`to_dict` (FPR levels become floats again)."""
        def pair(interval):
            return None if interval is None else (float(interval[0]), float(interval[1]))

        intervals = data.get("tpr_at_fpr_ci")
        return cls(
            auc=float(data["auc"]),
            tpr_at_fpr={float(level): float(tpr) for level, tpr in data["tpr_at_fpr"].items()},
            members=int(data["members"]),
            nonmembers=int(data["nonmembers"]),
            low_support={float(level): bool(low) for level, low in data["low_support"].items()},
            epsilon_lower_bound=float(data["epsilon_lower_bound"]),
            delta=float(data["delta"]),
            confidence=float(data["confidence"]),
            auc_ci=pair(data.get("auc_ci")),
            tpr_at_fpr_ci=None if intervals is None else {float(level): pair(ci) for level, ci in intervals.items()},
            resamples=int(data.get("resamples", 0)),
            degenerate_resamples=int(data.get("degenerate_resamples", 0)),
            bounds=None if data.get("epsilon_bounds") is None else EpsilonBounds.from_dict(data["epsilon_bounds"]),
        )



def summarize(
    roc: RocCurve, levels=FPR_LEVELS, *, delta: float = DEFAULT_DELTA, confidence: float = 0.95,
    bounds: EpsilonBounds | None = None,
) -> AttackMetrics:
    """AUC, TPR at each FPR level, the counts and the epsilon lower bound of one ROC.

    The ROC alone cannot be bootstrapped over target points, so the intervals stay None;
    :func:`evaluate` adds them from the scores. ``bounds`` (every bound, computed from the
    scores) are kept, and their Clopper-Pearson bound is not computed again.
    """
    return AttackMetrics(
        auc=area_under_curve(roc),
        tpr_at_fpr={float(level): tpr_at_fpr(roc, level) for level in levels},
        members=roc.members,
        nonmembers=roc.nonmembers,
        low_support={float(level): low_support(level, roc.nonmembers) for level in levels},
        epsilon_lower_bound=(epsilon_lower_bound(roc, delta=delta, confidence=confidence) if bounds is None
                             else bounds.clopper_pearson),
        delta=float(delta),
        confidence=float(confidence),
        bounds=bounds,
    )



def evaluate(
    scores: np.ndarray,
    members: np.ndarray,
    levels=FPR_LEVELS,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    delta: float = DEFAULT_DELTA,
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
        The point estimates, their intervals, the support flags and every epsilon lower bound.

    Raises:
        SignalsError: bad scores or too few target points to bootstrap.
    """
    if resamples < 0:
        raise ValueError(f"resamples must be 0 (no bootstrap) or more, got {resamples}")
    if roc is None:
        roc = roc_curve(scores, members)
    bounds = epsilon_bounds(scores, members, roc, delta=delta, confidence=confidence)
    metrics = summarize(roc, levels, delta=delta, confidence=confidence, bounds=bounds)
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
