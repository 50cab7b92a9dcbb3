"""Poisons for attribute inference: mislabeled replicas of every candidate completion of a
target's record (Tramèr et al., CCS 2022, section 4; the attack is in
:mod:`truthserum.attacks.attribute`)."""

from __future__ import annotations

import numpy as np

from truthserum.poison.label_flip import PoisonSet, flip_labels


def ambiguous_completions(x: np.ndarray, completions: np.ndarray, sensitive: np.ndarray) -> np.ndarray:
    """``(N,)`` True where a pool row's other candidate completion is itself a row of the pool.

    Two people who differ only in the sensitive field make the question ill-posed: the
    "wrong" completion of one is the other's record, in the training set of half the models.
    Such rows are not drawn as targets.

    Args:
        x: ``(N, D)`` encoded pool rows.
        completions: ``(N, k, D)`` every candidate completion of every row.
        sensitive: ``(N,)`` each row's true value.
    """
    rows = {row.tobytes() for row in np.ascontiguousarray(x)}
    num_points, k = completions.shape[:2]
    ambiguous = np.zeros(num_points, dtype=bool)
    for i in range(num_points):
        ambiguous[i] = any(
            completions[i, v].tobytes() in rows for v in range(k) if v != sensitive[i]
        )
    return ambiguous


def make_completion_poisons(
    *, completions: np.ndarray, labels: np.ndarray, replicas: int, num_classes: int, rng: np.random.Generator
) -> PoisonSet:
    """r replicas of every candidate completion of every target, all with the target's one
    wrong label, so that no completion is singled out by its label.

    Args:
        completions: ``(T, k, D)`` encoded candidate completions.
        labels: ``(T,)`` the targets' true labels.
        replicas: r, copies of each completion (0 gives an empty set).

    Returns:
        ``T * k * r`` poisons; ``source`` is the target's position (0..T-1), not a pool index.
    """
    num_targets, k = completions.shape[:2]
    target_labels = flip_labels(labels=labels, num_classes=num_classes, rng=rng)
    rows = np.repeat(np.arange(num_targets * k), replicas)
    return PoisonSet(
        x=completions.reshape(num_targets * k, -1)[rows],
        y=np.repeat(target_labels, k * replicas).astype(np.int64),
        source=(rows // k).astype(np.int64),
        target_labels=np.asarray(target_labels, dtype=np.int64),
        replicas=int(replicas),
    )
