"""Stage 3, poison: points the adversary adds to every model's training set.

Targeted label flipping (Tramèr et al., CCS 2022, section 4): each target x gets r identical
replicas carrying one wrong label y' = (y + u) mod C, u uniform in 1..C-1. A model that did
not train on x learns x -> y' and its confidence in y collapses; a model that did is torn
between one (x, y) and r copies of (x, y'), so its confidence in y stays intermediate. The
membership signal on the true label therefore separates far more than without poisons.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PoisonSet:
    """Poison points and where they came from.

    Attributes:
        x: ``(P, *features)`` poison features.
        y: ``(P,)`` poison labels.
        source: ``(P,)`` pool index of the target each poison replicates.
        target_labels: ``(T,)`` the wrong label chosen for each target (aligned with targets).
        replicas: poisons per target, r.
    """

    x: np.ndarray
    y: np.ndarray
    source: np.ndarray
    target_labels: np.ndarray
    replicas: int

    @property
    def total(self) -> int:
        return int(self.y.shape[0])


def flip_labels(*, labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """One wrong label per entry: (y + u) mod C with u uniform in 1..C-1, never equal to y."""
    shift = rng.integers(1, num_classes, size=labels.shape[0])
    return (labels + shift) % num_classes


def make_label_flip_poisons(
    *,
    x: np.ndarray,
    y: np.ndarray,
    targets: np.ndarray,
    replicas: int,
    num_classes: int,
    rng: np.random.Generator,
) -> PoisonSet:
    """r mislabeled replicas of every target point (r = 0 gives an empty poison set).

    The wrong labels do not depend on r, so budgets drawn with the same generator state differ
    only in how many copies each target gets (what a replica sweep compares)."""
    target_labels = flip_labels(labels=y[targets], num_classes=num_classes, rng=rng)
    return replicate_poisons(x=x, targets=targets, target_labels=target_labels, replicas=replicas)


def replicate_poisons(
    *, x: np.ndarray, targets: np.ndarray, target_labels: np.ndarray, replicas: int | np.ndarray
) -> PoisonSet:
    """r copies of every target carrying its chosen wrong label; ``replicas`` is one count for
    all, or one per target (an adaptive budget, whose set records the largest as ``replicas``)."""
    source = np.repeat(targets, replicas).astype(np.int64)
    return PoisonSet(
        x=x[source],
        y=np.repeat(target_labels, replicas).astype(np.int64),
        source=source,
        target_labels=np.asarray(target_labels, dtype=np.int64),
        replicas=int(np.max(replicas, initial=0)),
    )
