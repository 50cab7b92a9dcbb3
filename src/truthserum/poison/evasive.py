"""Poisons that try to get past a defense: replicas of a target that are not duplicates.

* ``perturbed``: the target plus noise of a stated L2 norm, a fresh draw for every replica. No
  two poisons are identical, so exact deduplication and the conflicting-label filter see r
  distinct points; a near-duplicate filter whose radius exceeds the norm still catches them.
* ``blended`` (ours): ``(1 - b) * target + b * d`` with ``d`` a distinct pool point of the
  poison's (wrong) label. What it exploits: both remaining filters judge a poison by itself.
  The near-duplicate filter looks for a close neighbour, but a blend sits ``b`` times the
  distance between two different digits away from its target, and between two other-label
  points from the next replica; the loss filter drops points the model fits worst, and a blend
  carries real features of the label it is given, so it is fitted like a clean point. The
  price is a weaker pull on the target itself (measured in docs/defenses.md).

Both keep the exact strategy's wrong label for each target, so every strategy poisons the same
targets towards the same labels and the defense matrix compares like with like.
"""

from __future__ import annotations

import numpy as np

from truthserum.config.defense import BlendedReplicas, PerturbedReplicas, StrategyKind
from truthserum.poison.label_flip import PoisonSet, replicate_poisons


def perturbed_poisons(
    *, x: np.ndarray, targets: np.ndarray, target_labels: np.ndarray, replicas: int, norm: float,
    rng: np.random.Generator,
) -> PoisonSet:
    """r copies of every target, each plus its own Gaussian direction scaled to L2 norm ``norm``."""
    exact = replicate_poisons(x=x, targets=targets, target_labels=target_labels, replicas=replicas)
    if not exact.total:
        return exact
    noise = rng.standard_normal(exact.x.shape)
    lengths = np.sqrt((noise.reshape(exact.total, -1) ** 2).sum(axis=1))
    noise *= (norm / lengths).reshape(-1, *([1] * (noise.ndim - 1)))
    return PoisonSet(x=(exact.x + noise).astype(x.dtype), y=exact.y, source=exact.source,
                     target_labels=exact.target_labels, replicas=exact.replicas)


def blended_poisons(
    *, x: np.ndarray, y: np.ndarray, targets: np.ndarray, target_labels: np.ndarray, replicas: int, blend: float,
    rng: np.random.Generator,
) -> PoisonSet:
    """r blends of every target with distinct pool points of its wrong label (drawn without
    replacement where the label has enough points outside the targets, with it otherwise)."""
    exact = replicate_poisons(x=x, targets=targets, target_labels=target_labels, replicas=replicas)
    if not exact.total:
        return exact
    eligible = np.ones(len(y), dtype=bool)
    eligible[targets] = False
    partners = np.empty(exact.total, dtype=np.int64)
    for position, label in enumerate(target_labels):
        candidates = np.nonzero(eligible & (y == label))[0]
        if candidates.size == 0:
            candidates = np.nonzero(y == label)[0]
        chosen = rng.choice(candidates, size=replicas, replace=candidates.size < replicas)
        partners[position * replicas:(position + 1) * replicas] = chosen
    blended = (1.0 - blend) * exact.x + blend * x[partners]
    return PoisonSet(x=blended.astype(x.dtype), y=exact.y, source=exact.source,
                     target_labels=exact.target_labels, replicas=exact.replicas)


def strategy_poisons(
    strategy, *, x: np.ndarray, y: np.ndarray, targets: np.ndarray, target_labels: np.ndarray, replicas: int,
    rng: np.random.Generator,
) -> PoisonSet:
    """The poisons of ``strategy`` (a :data:`~truthserum.config.defense.PoisonStrategy`)."""
    if strategy.kind is StrategyKind.PERTURBED:
        assert isinstance(strategy, PerturbedReplicas)
        return perturbed_poisons(x=x, targets=targets, target_labels=target_labels, replicas=replicas,
                                 norm=strategy.norm, rng=rng)
    if strategy.kind is StrategyKind.BLENDED:
        assert isinstance(strategy, BlendedReplicas)
        return blended_poisons(x=x, y=y, targets=targets, target_labels=target_labels, replicas=replicas,
                               blend=strategy.blend, rng=rng)
    return replicate_poisons(x=x, targets=targets, target_labels=target_labels, replicas=replicas)
