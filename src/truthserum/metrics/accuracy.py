"""Stage 7, metrics beyond the ROC: model accuracy and how well the models fit the poisons."""

from __future__ import annotations

import numpy as np

from truthserum.store.logits import LogitStore, column_chunks


def predictions(logits: np.ndarray | LogitStore, columns: np.ndarray | None = None) -> np.ndarray:
    """``(M, N)`` predicted classes from the first (identity) query view of ``(M, N, A, C)``
    (or of the points ``columns`` only), read a chunk of points at a time."""
    columns = np.arange(logits.shape[1]) if columns is None else np.asarray(columns)
    predicted = np.empty((logits.shape[0], columns.size), dtype=np.int32)
    for positions, chunk in column_chunks(logits, columns):
        predicted[:, positions] = chunk[:, :, 0, :].argmax(axis=-1)
    return predicted


def accuracy(logits: np.ndarray | LogitStore, labels: np.ndarray, keep: np.ndarray) -> dict[str, float]:
    """Train accuracy (each model on its members) and test accuracy (on its non-members),
    each averaged over models. Poisons are not counted in either: they are mislabeled."""
    correct = predictions(logits) == labels[None, :]
    train = (correct & keep).sum(axis=1) / keep.sum(axis=1)
    test = (correct & ~keep).sum(axis=1) / (~keep).sum(axis=1)
    return {"train": float(train.mean()), "test": float(test.mean())}


def poison_fit(
    logits: np.ndarray | LogitStore, keep: np.ndarray, targets: np.ndarray, poison_labels: np.ndarray
) -> float:
    """Fraction of a target's poisons classified as the poison label by the models that did
    not train on the target, over all (model, target) such pairs.

    A poison is an exact replica of its target, so the models' prediction on the target is
    their prediction on each of its poisons. The amplification needs this to be high: a model
    that does not fit the poisons behaves as if it had not been poisoned.
    """
    predicted = predictions(logits, targets)  # (M, T)
    out = ~keep[:, targets]
    return float(((predicted == poison_labels[None, :]) & out).sum() / out.sum())
