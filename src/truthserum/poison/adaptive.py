"""Stage 3, poison: adaptive budgets, a replica count per target chosen on calibration models.

A fixed budget gives every target the same r mislabeled replicas. The right count differs per
target: an outlier needs few before a model that did not train on it answers the wrong label,
a typical point more, and too many flip the models that did train on it as well, which is what
empties the label-only attack at 8 replicas. Chaudhari, Severi, Oprea and Ullman ("Chameleon",
ICLR 2024) therefore choose a count per target on shadow models. Here:

1. **Calibration models.** The adversary trains models of its own on the pool (never the models
   under attack: those are trained afterwards, on the budgets chosen here). Calibration model c
   gives target t the candidate budget ``budgets[(c + t) mod B]``, so every model carries the
   same mix of budgets (about T x mean(budgets) poisons) and every (target, budget) is seen by
   the same number of models; of those, half train on the target (:func:`calibration_plan`).
2. **Separation per (target, budget)** (:func:`separation`), for the chosen goal:

   - ``label-only``: the share of the IN models' answers (over the query views) that are the
     true label, minus the OUT models' share: the advantage of the test "labelled right", the
     statistic the label-only attack counts;
   - ``lira``: ``(mean phi_IN - mean phi_OUT) / sqrt((var_IN + var_OUT) / 2 + VARIANCE_FLOOR)``
     with ``phi`` the logit-scaled confidence in the true label, ``log p - log(1 - p)``, averaged
     over the views (the statistic LiRA fits Gaussians to; Carlini et al., S&P 2022).
3. **Allocation** (:func:`allocate_budgets`): counts that maximise the summed separation for
   the total they spend, at most ``cap`` poisons in all. This multiple-choice knapsack is relaxed with a price
   ``lam`` per poison: each target takes ``argmax_r separation(t, r) - lam * r`` (ties to the
   smaller r, so a count that buys nothing is never bought), and ``lam`` is bisected to the
   smallest price whose total fits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from truthserum.attacks.signals import phi_from_logits
from truthserum.config.defense import AdaptiveGoal

VARIANCE_FLOOR = 1e-2  # keeps the LiRA separation finite when a handful of models agree exactly
BISECTION_STEPS = 60


@dataclass(frozen=True)
class CalibrationPlan:
    """Which candidate budget each calibration model gives each target, and whether it trains
    on that target.

    Attributes:
        budget_index: ``(M, T)`` index into the candidate budgets.
        member: ``(M, T)`` bool, model c trains on target t.
    """

    budget_index: np.ndarray
    member: np.ndarray

    def replica_mask(self, budgets: np.ndarray) -> np.ndarray:
        """``(M, T * max(budgets))`` bool: which of each target's ``max(budgets)`` replicas model c
        trains on (the first ``budgets[budget_index[c, t]]``), target-major like
        :func:`~truthserum.poison.label_flip.replicate_poisons`."""
        largest = int(budgets.max())
        counts = budgets[self.budget_index]  # (M, T)
        return (np.arange(largest)[None, None, :] < counts[:, :, None]).reshape(counts.shape[0], -1)


def calibration_plan(*, num_models: int, num_targets: int, num_budgets: int, rng: np.random.Generator
                     ) -> CalibrationPlan:
    """Budgets assigned cyclically, ``(c + t) mod B``; for every (target, budget), a random half
    of its models (the smaller half when odd) train on the target.

    Raises:
        ValueError: fewer than two models per budget.
    """
    if num_models < 2 * num_budgets:
        raise ValueError(f"{num_models} calibration models are too few for {num_budgets} budgets (2 per budget)")
    budget_index = (np.arange(num_models)[:, None] + np.arange(num_targets)[None, :]) % num_budgets
    member = np.zeros((num_models, num_targets), dtype=bool)
    for target in range(num_targets):
        for budget in range(num_budgets):
            models = np.nonzero(budget_index[:, target] == budget)[0]
            member[rng.permutation(models)[: models.size // 2], target] = True
    return CalibrationPlan(budget_index=budget_index, member=member)


def true_label_statistics(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """From ``(M, T, A, C)`` logits and ``(T,)`` true labels: ``(M, T)`` share of views labelled
    right, and ``(M, T)`` logit-scaled confidence in the true label averaged over the views."""
    right = np.asarray(logits).argmax(axis=3) == labels[None, :, None]
    return right.mean(axis=2), phi_from_logits(logits, labels).mean(axis=2)  # LiRA's own, finite when saturated


def separation(logits: np.ndarray, labels: np.ndarray, plan: CalibrationPlan, num_budgets: int,
               goal: AdaptiveGoal) -> np.ndarray:
    """``(T, B)`` how far the IN and OUT calibration models of each (target, budget) lie apart
    under ``goal`` (see the module's docstring); higher is better for the attack."""
    right, phi = true_label_statistics(logits, labels)
    statistic = right if goal is AdaptiveGoal.LABEL_ONLY else phi
    result = np.empty((labels.shape[0], num_budgets))
    for budget in range(num_budgets):
        given = plan.budget_index == budget
        inside, outside = given & plan.member, given & ~plan.member
        mean_in = (statistic * inside).sum(axis=0) / inside.sum(axis=0)
        mean_out = (statistic * outside).sum(axis=0) / outside.sum(axis=0)
        if goal is AdaptiveGoal.LABEL_ONLY:
            result[:, budget] = mean_in - mean_out
            continue
        var_in = (((statistic - mean_in) ** 2) * inside).sum(axis=0) / inside.sum(axis=0)
        var_out = (((statistic - mean_out) ** 2) * outside).sum(axis=0) / outside.sum(axis=0)
        result[:, budget] = (mean_in - mean_out) / np.sqrt((var_in + var_out) / 2 + VARIANCE_FLOOR)
    return result


def _choose(gains: np.ndarray, budgets: np.ndarray, price: float) -> np.ndarray:
    """Each target's budget index maximising gain minus price per poison; ties to the smaller
    budget (argmax takes the first, and the budgets increase)."""
    return (gains - price * budgets[None, :]).argmax(axis=1)


def allocate_budgets(gains: np.ndarray, budgets: np.ndarray, cap: int) -> np.ndarray:
    """``(T,)`` replica counts, one of ``budgets`` per target, with at most ``cap`` in all,
    maximising the summed ``gains`` (``(T, B)``, one column per budget) under a price per poison
    bisected to the smallest that fits (see the module's docstring). The total may fall short of
    ``cap`` where no single price spends it exactly."""
    budgets = np.asarray(budgets)
    gains = np.nan_to_num(np.asarray(gains, dtype=np.float64), nan=-np.inf)
    chosen = _choose(gains, budgets, 0.0)
    if budgets[chosen].sum() <= cap:
        return budgets[chosen].astype(np.int64)
    finite = gains[np.isfinite(gains)]
    low, high = 0.0, float(finite.max() - finite.min()) / float(budgets[1] - budgets[0]) + 1.0
    for _ in range(BISECTION_STEPS):  # at ``high`` every target takes budget 0, which fits
        middle = (low + high) / 2
        if budgets[_choose(gains, budgets, middle)].sum() <= cap:
            high = middle
        else:
            low = middle
    return budgets[_choose(gains, budgets, high)].astype(np.int64)
