"""Every epsilon lower bound of one attack, labelled (:class:`EpsilonBounds`), and the ceiling
each bound reaches at a perfect attack (:func:`ceiling_table`), for planning an audit.

Many runs: every (target model, target point) pair is a trial.
- ``clopper-pearson``: :mod:`truthserum.metrics.epsilon`, corrected over every threshold.
- ``gaussian``: Gaussian DP, corrected over every threshold (:mod:`.gaussian_dp`).
- ``gaussian-split``: Gaussian DP, threshold chosen on half the target points, counted on the
  other half.

One run: the first target model alone, its target points as the canaries (each point is in a
model by a fair coin of its own, since every column of the keep matrix is drawn on its own).
- ``one-run``: Steinke, Nasr, Jagielski 2023 (:mod:`.one_run`).
- ``one-run-fdp``: Mahloujifar, Melis, Chaudhuri 2025, with the Gaussian trade-off curve.

The Gaussian bounds and ``one-run-fdp`` state an epsilon at delta > 0 only (no mu > 0 has a
finite epsilon at delta 0); at delta 0 their epsilon is None and their mu is still given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from truthserum.metrics.epsilon import epsilon_from_counts, epsilon_lower_bound
from truthserum.metrics.gaussian_dp import (
    epsilon_of_gaussian, gaussian_mu_bound, gaussian_split_mu_bound, mu_from_counts,
)
from truthserum.metrics.one_run import epsilon_one_run, mu_one_run_fdp, one_run_bounds
from truthserum.metrics.roc import RocCurve

DEFAULT_DELTA = 1e-5
"""The delta of every bound unless one is given (``metrics.delta``): the usual delta of DP-SGD
audits, and above 0 so that the Gaussian bounds state an epsilon."""

SPLIT_SEED = 20230809
"""The seed of the split of target points for ``gaussian-split``; fixed, so results repeat."""

BOUND_FIELDS = {
    "clopper-pearson": "clopper_pearson", "gaussian": "gaussian", "gaussian-split": "gaussian_split",
    "one-run": "one_run", "one-run-fdp": "one_run_fdp",
}
"""Bound name -> the :class:`EpsilonBounds` field (and ``epsilon_bounds`` key) holding it."""


def _gaussian_epsilon(mu: float, delta: float) -> float | None:
    return epsilon_of_gaussian(mu, delta) if delta > 0 else None


@dataclass(frozen=True)
class EpsilonBounds:
    """The lower bounds on epsilon of one attack's scores, each at ``confidence``.

    ``*_mu`` are the Gaussian-DP bounds on mu behind the Gaussian epsilons; an epsilon is None
    where ``delta`` is 0. ``one_run_canaries`` is the number of canaries of the one-run bounds.
    """

    delta: float
    confidence: float
    clopper_pearson: float
    gaussian: float | None
    gaussian_mu: float
    gaussian_split: float | None
    gaussian_split_mu: float
    one_run: float
    one_run_fdp: float | None
    one_run_fdp_mu: float
    one_run_canaries: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EpsilonBounds:
        return cls(**data)

    def by_label(self) -> dict[str, float | None]:
        """Bound name (the keys of :data:`BOUND_FIELDS`) -> epsilon."""
        return {name: getattr(self, field) for name, field in BOUND_FIELDS.items()}


def epsilon_bounds(
    scores: np.ndarray, members: np.ndarray, roc: RocCurve, *, delta: float, confidence: float,
    split_seed: int = SPLIT_SEED,
) -> EpsilonBounds:
    """Every bound of an attack's ``(M, T)`` scores against the ground truth ``members``.

    ``roc`` is the pooled ROC of the same scores. The one-run bounds read row 0 (the first
    target model), its targets the canaries.
    """
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    members = np.atleast_2d(np.asarray(members, dtype=bool))
    gaussian_mu = gaussian_mu_bound(roc, confidence=confidence)
    split_mu = gaussian_split_mu_bound(scores, members, confidence=confidence,
                                       rng=np.random.default_rng(split_seed))
    one_run = one_run_bounds(scores[0], members[0], delta=delta, confidence=confidence)
    return EpsilonBounds(
        delta=float(delta), confidence=float(confidence),
        clopper_pearson=epsilon_lower_bound(roc, delta=delta, confidence=confidence),
        gaussian=_gaussian_epsilon(gaussian_mu, delta), gaussian_mu=gaussian_mu,
        gaussian_split=_gaussian_epsilon(split_mu, delta), gaussian_split_mu=split_mu,
        one_run=one_run.epsilon, one_run_fdp=_gaussian_epsilon(one_run.mu_fdp, delta),
        one_run_fdp_mu=one_run.mu_fdp, one_run_canaries=one_run.canaries,
    )


@dataclass(frozen=True)
class Ceiling:
    """The largest epsilon each bound can show with ``trials`` trials and a perfect attack."""

    trials: int
    clopper_pearson: float
    gaussian: float
    one_run: float
    one_run_fdp: float


def ceilings(trials: int, *, delta: float, confidence: float = 0.95) -> Ceiling:
    """The bounds of a perfect attack with one threshold (or guess set) fixed in advance.

    Many runs: ``trials`` pairs, half members, all called right. One run: ``trials`` canaries,
    all guessed, all right. With a threshold picked among K, each bound is lower still (its
    confidence split K ways); this is what no attack can beat.
    """
    if trials < 2:
        raise ValueError(f"a ceiling needs at least 2 trials, got {trials}")
    positives, negatives = trials // 2, trials - trials // 2
    mu = mu_from_counts(positives, positives, 0, negatives, confidence=confidence)
    return Ceiling(
        trials=trials,
        clopper_pearson=epsilon_from_counts(positives, positives, 0, negatives, delta=delta, confidence=confidence),
        gaussian=epsilon_of_gaussian(mu, delta),
        one_run=epsilon_one_run(trials, trials, trials, delta=delta, confidence=confidence),
        one_run_fdp=epsilon_of_gaussian(mu_one_run_fdp(trials, trials, trials, confidence=confidence), delta),
    )


def ceiling_table(trials: Sequence[int] = (100, 1_000, 10_000), *, delta: float = DEFAULT_DELTA,
                  confidence: float = 0.95) -> str:
    """The ceilings as a Markdown table, one row per number of trials."""
    if not 0.0 < delta < 1.0:
        raise ValueError(f"the ceilings of the Gaussian bounds need delta in (0, 1), got {delta}")
    lines = [
        f"Largest epsilon each bound can show at a perfect attack ({confidence:.0%} confidence, delta {delta:g}):",
        "",
        "| trials | clopper-pearson | gaussian | one-run | one-run-fdp |",
        "|---|---|---|---|---|",
    ]
    for count in trials:
        row = ceilings(int(count), delta=delta, confidence=confidence)
        lines.append(f"| {row.trials:,} | {row.clopper_pearson:.2f} | {row.gaussian:.2f} | "
                     f"{row.one_run:.2f} | {row.one_run_fdp:.2f} |")
    lines += ["", "trials: (target model, target point) pairs for the many-run bounds, half of them "
                  "members; canaries of one run for the one-run bounds."]
    return "\n".join(lines)
