"""The soundness check of the epsilon bounds, by simulation on a mechanism of known epsilon.

The mechanism is the Gaussian one: a trial's score is N(0, 1) when the canary is out and
N(mu, 1) when it is in, which is exactly mu-GDP, hence exactly (epsilon, delta)-DP at
``epsilon = epsilon_of_gaussian(mu, delta)`` (and at no smaller epsilon). Each repetition
draws fresh scores and computes every bound; a bound is sound when it exceeds the true
epsilon in at most ``1 - confidence`` of the repetitions, and useful when its median comes
close to the true epsilon.

- Many runs: ``pairs`` members and as many non-members, every score independent.
- One run: ``canaries`` canaries, each in by its own fair coin, scored once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

from truthserum.metrics.bounds import BOUND_FIELDS
from truthserum.metrics.epsilon import epsilon_lower_bound
from truthserum.metrics.gaussian_dp import epsilon_of_gaussian, gaussian_mu_bound, gaussian_split_mu_bound
from truthserum.metrics.one_run import one_run_bounds
from truthserum.metrics.roc import roc_curve


def mu_of_epsilon(epsilon: float, delta: float) -> float:
    """The mu of the Gaussian mechanism that is exactly (epsilon, delta)-DP."""
    if epsilon <= 0.0:
        raise ValueError(f"epsilon must be positive, got {epsilon}")
    high = 1.0
    while epsilon_of_gaussian(high, delta) < epsilon:
        high *= 2.0
    return float(brentq(lambda mu: epsilon_of_gaussian(mu, delta) - epsilon, 1e-9, high, xtol=1e-12))


@dataclass(frozen=True)
class SoundnessRow:
    """One bound's record over the repetitions at one true epsilon."""

    bound: str
    epsilon: float
    repetitions: int
    violations: int
    alpha: float
    median: float

    @property
    def violation_rate(self) -> float:
        return self.violations / self.repetitions

    @property
    def median_fraction(self) -> float:
        """The median bound as a fraction of the true epsilon."""
        return self.median / self.epsilon


def _draw(rng: np.random.Generator, mu: float, pairs: int, canaries: int):
    """One repetition's scores: many-run pairs (members first) and one run's canaries."""
    members = np.r_[np.ones(pairs, bool), np.zeros(pairs, bool)]
    pair_scores = rng.standard_normal(2 * pairs) + mu * members
    coins = rng.random(canaries) < 0.5
    canary_scores = rng.standard_normal(canaries) + mu * coins
    return pair_scores, members, canary_scores, coins


def simulate_bounds(
    epsilon: float, *, delta: float = 1e-5, confidence: float = 0.95, repetitions: int = 1000,
    pairs: int = 1000, canaries: int = 1000, seed: int = 0,
) -> list[SoundnessRow]:
    """Every bound's violations and median over ``repetitions`` draws at the true ``epsilon``.

    The many-run bounds read the pairs (one row of ``2 * pairs`` targets, over which
    ``gaussian-split`` splits), the one-run bounds the canaries: independent draws, so neither
    sees the other's data.
    """
    if not 0.0 < delta < 1.0:
        raise ValueError(f"the simulation needs delta in (0, 1), got {delta}")
    mu = mu_of_epsilon(epsilon, delta)
    rng = np.random.default_rng(seed)
    found: dict[str, list[float]] = {name: [] for name in BOUND_FIELDS}
    for _ in range(repetitions):
        pair_scores, members, canary_scores, coins = _draw(rng, mu, pairs, canaries)
        roc = roc_curve(pair_scores, members)
        split_mu = gaussian_split_mu_bound(pair_scores, members, confidence=confidence,
                                           rng=np.random.default_rng(int(rng.integers(2**31))))
        one = one_run_bounds(canary_scores, coins, delta=delta, confidence=confidence)
        found["clopper-pearson"].append(epsilon_lower_bound(roc, delta=delta, confidence=confidence))
        found["gaussian"].append(epsilon_of_gaussian(gaussian_mu_bound(roc, confidence=confidence), delta))
        found["gaussian-split"].append(epsilon_of_gaussian(split_mu, delta))
        found["one-run"].append(one.epsilon)
        found["one-run-fdp"].append(epsilon_of_gaussian(one.mu_fdp, delta))
    alpha = 1.0 - confidence
    return [
        SoundnessRow(bound=name, epsilon=epsilon, repetitions=repetitions,
                     violations=int(np.sum(np.asarray(values) > epsilon * (1 + 1e-9))),
                     alpha=alpha, median=float(np.median(values)))
        for name, values in found.items()
    ]


def soundness_table(rows: list[SoundnessRow]) -> str:
    """The rows as a Markdown table."""
    lines = ["| bound | true epsilon | repetitions | violations | rate (alpha) | median bound | median / true |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row.bound} | {row.epsilon:g} | {row.repetitions:,} | {row.violations} | "
                     f"{row.violation_rate:.3f} ({row.alpha:g}) | {row.median:.2f} | {row.median_fraction:.2f} |")
    return "\n".join(lines)
