"""How well an attribute attack guesses a sensitive value: accuracy, balanced accuracy and the
base rate on member pairs (and non-member pairs, as a control), with intervals from a bootstrap
over targets, and for binary attributes the ROC of the score margin."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from truthserum.metrics.bootstrap import percentile_interval, resample_counts
from truthserum.metrics.roc import FPR_LEVELS, area_under_curve, roc_curve, tpr_at_fpr


@dataclass(frozen=True)
class _GuessPairs:
    """The (model, target) pairs of one kind, flattened, with the target each belongs to."""

    guess: np.ndarray
    truth: np.ndarray
    margin: np.ndarray | None  # binary attributes: score(1) - score(0)
    target: np.ndarray


def _guess_pairs(scores: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> _GuessPairs:
    models, targets = np.nonzero(mask)
    binary = scores.shape[2] == 2
    return _GuessPairs(
        guess=scores.argmax(axis=2)[models, targets],
        truth=truth[targets],
        margin=(scores[:, :, 1] - scores[:, :, 0])[models, targets] if binary else None,
        target=targets,
    )


def _accuracy(guess: np.ndarray, truth: np.ndarray, weight: np.ndarray) -> float:
    return float(np.sum(weight * (guess == truth)) / np.sum(weight))


def _balanced_accuracy(guess: np.ndarray, truth: np.ndarray, weight: np.ndarray, k: int) -> float:
    """Mean recall over the values present among the pairs (each value counts equally)."""
    recalls = []
    for value in range(k):
        of_value = weight * (truth == value)
        if of_value.sum() > 0:
            recalls.append(np.sum(of_value * (guess == value)) / of_value.sum())
    return float(np.mean(recalls))


def _bootstrap(
    statistic: Callable[[np.ndarray], float | None], target: np.ndarray, num_targets: int,
    resamples: int, confidence: float, rng: np.random.Generator,
) -> list[float] | None:
    """Percentile interval of ``statistic(pair weights)`` over resamples of the targets: a
    target's pairs share its record, so they move together (as in :mod:`truthserum.metrics.roc`)."""
    if not resamples:
        return None
    samples = []
    for counts in resample_counts(rng, num_targets, resamples):
        value = statistic(counts[target].astype(np.float64))
        if value is not None:
            samples.append(value)
    if not samples:  # every resample degenerate: too few targets to say more than the estimate
        return None
    return list(percentile_interval(np.array(samples), confidence))


def _weighted_auc(margin: np.ndarray, positive: np.ndarray, weight: np.ndarray) -> float | None:
    """AUC of ``margin`` for telling value 1 from value 0, each pair counted ``weight`` times."""
    keep = weight > 0
    if not positive[keep].any() or positive[keep].all():
        return None
    rows = np.repeat(np.nonzero(keep)[0], weight[keep].astype(np.int64))
    return area_under_curve(roc_curve(margin[rows], positive[rows]))


def guess_metrics(
    pairs: _GuessPairs, *, k: int, majority: int, num_targets: int, resamples: int, confidence: float,
    rng: np.random.Generator,
) -> dict:
    """Accuracy, balanced accuracy and, for binary attributes, the ROC of one kind of pairs."""
    ones = np.ones(pairs.guess.size)
    always_majority = np.full_like(pairs.truth, majority)

    def interval(statistic):
        return _bootstrap(statistic, pairs.target, num_targets, resamples, confidence, rng)

    result = {
        "pairs": int(pairs.guess.size),
        "accuracy": _accuracy(pairs.guess, pairs.truth, ones),
        "accuracy_ci": interval(lambda w: _accuracy(pairs.guess, pairs.truth, w)),
        "balanced_accuracy": _balanced_accuracy(pairs.guess, pairs.truth, ones, k),
        "balanced_accuracy_ci": interval(lambda w: _balanced_accuracy(pairs.guess, pairs.truth, w, k)),
        "base_rate": _accuracy(always_majority, pairs.truth, ones),
        "base_rate_ci": interval(lambda w: _accuracy(always_majority, pairs.truth, w)),
    }
    if pairs.margin is not None:
        positive = pairs.truth == 1
        roc = roc_curve(pairs.margin, positive) if 0 < positive.sum() < positive.size else None
        result["auc"] = None if roc is None else area_under_curve(roc)
        result["auc_ci"] = None if roc is None else interval(
            lambda w: _weighted_auc(pairs.margin, positive, w)
        )
        result["tpr_at_fpr"] = None if roc is None else {
            str(level): tpr_at_fpr(roc, level) for level in FPR_LEVELS
        }
    return result


def attribute_metrics(
    scores: np.ndarray, truth: np.ndarray, keep: np.ndarray, *, majority: int, resamples: int = 1000,
    confidence: float = 0.95, rng: np.random.Generator | int = 0,
) -> dict:
    """How well ``scores`` guess the sensitive value, on member pairs and (control) non-member pairs.

    Args:
        scores: ``(M, T, k)`` attack scores.
        truth: ``(T,)`` each target's true value (0..k-1).
        keep: ``(M, T)`` member pairs.
        majority: the value the base-rate guess always names (the pool's most common one).
        resamples: bootstrap resamples of the targets (0: no intervals).

    Returns:
        ``{"members": {...}, "nonmembers": {...}}``, each with accuracy, balanced accuracy,
        the base rate (always guessing ``majority``), intervals and, when k = 2, the AUC of
        score(1) - score(0) for telling the value 1 from 0, with TPR at the usual FPR levels.
    """
    generator = np.random.default_rng(rng)
    k, num_targets = scores.shape[2], scores.shape[1]
    return {
        kind: guess_metrics(
            _guess_pairs(scores, truth, mask), k=k, majority=majority, num_targets=num_targets,
            resamples=resamples, confidence=confidence, rng=generator,
        )
        for kind, mask in (("members", keep), ("nonmembers", ~keep))
    }


def completion_fit(logits: np.ndarray, keep: np.ndarray, poison_labels: np.ndarray) -> float:
    """Share of (model, target, completion) triples, over models that did not train on the
    target, where the model predicts the poison label: how well the models fit the poisons
    (a completion's poisons are its exact copies). Uses the first query view."""
    predicted = logits[:, :, :, 0, :].argmax(axis=-1)  # (M, T, k)
    fitted = predicted == poison_labels[None, :, None]
    out = ~keep
    return float((fitted & out[:, :, None]).sum() / (out.sum() * logits.shape[2]))
