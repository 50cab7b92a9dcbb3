"""Attribute inference, with and without poisoning (Tramèr et al., CCS 2022, section 4).

The adversary knows a target's record except one sensitive field with k possible values.
Each candidate completion (x with value v, y) is a membership question: the completion the
model trained on is the true one, so the value whose completion looks most like a member is
the guess. Poisoning: r replicas of every candidate completion, all with one wrong label
y' != y, go into the training set. A model then learns x -> y' for every completion, except
that the true completion also has its one clean copy (x_v*, y) fighting the poisons: the
model's confidence in y stays higher there than on every other completion, whatever the
population's correlation between the field and the label says.

Scores are ``(M, T, k)``: for model m as the target model, target t and candidate v. The
question only makes sense where the target model trained on the target (a member pair);
the non-member pairs are kept as a control, since what an attack guesses right about a
person the model never saw comes from the population, not from that person's record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import numpy as np

from truthserum.attacks.lira import SCALE_FLOOR
from truthserum.attacks.signals import phi_from_logits
from truthserum.errors import SignalsError
from truthserum.metrics import (
    FPR_LEVELS, area_under_curve, percentile_interval, resample_counts, roc_curve, tpr_at_fpr,
)
from truthserum.poison import PoisonSet, flip_labels


class AttributeAttack(str, Enum):
    """How a candidate completion is scored as a membership question.

    - ``confidence``: the target model's phi = log(p_y / (1 - p_y)) on the completion: the
      classic attack that picks the value the model is most confident on (Fredrikson et al.
      2014; Yeom et al. 2018), no shadow models.
    - ``lira-offline``: phi standardised by the completion's own OUT distribution (the
      shadow models that never saw the target, so none of its completions): Gaussian
      location and per-completion scale, as offline LiRA. It removes how confident models
      are on a completion anyway, which is what the population says about it.
    - ``lira-offline-fixed``: the same with one scale per target model (pooled over every
      target and completion), steadier with few shadow models.

    An online variant would need shadow models trained on each candidate completion (k
    times the training); the keep matrix only has shadows trained on the true one.
    """

    CONFIDENCE = "confidence"
    LIRA_OFFLINE = "lira-offline"
    LIRA_OFFLINE_FIXED = "lira-offline-fixed"


def completion_phi(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``(M, T, k)`` phi of every model on every completion, averaged over query views.

    Args:
        logits: ``(M, T, k, A, C)`` logits on the candidate completions.
        labels: ``(T,)`` each target's true label.
    """
    num_models, num_targets, k, views, classes = logits.shape
    flat = logits.reshape(num_models, num_targets * k, views, classes)
    phi = phi_from_logits(flat, np.repeat(labels, k))  # (M, T*k, A)
    return phi.mean(axis=-1).reshape(num_models, num_targets, k)


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


def _offline_scores(phi: np.ndarray, keep: np.ndarray, *, fixed_scale: bool) -> np.ndarray:
    """phi of each target model, standardised by the OUT shadows (every other model that did
    not train on the target). Needs at least two OUT shadows per target."""
    num_models = phi.shape[0]
    out = ~keep  # (M, T)
    scores = np.empty_like(phi)
    for m in range(num_models):
        shadows = out.copy()
        shadows[m] = False
        count = shadows.sum(axis=0)  # (T,)
        if count.min() < 2:
            raise SignalsError(
                "attribute inference needs at least two shadow models that did not train on each "
                f"target; model {m} has {int(count.min())} for some target (use more models)"
            )
        weights = shadows[:, :, None].astype(np.float64)
        location = (phi * weights).sum(axis=0) / count[:, None]
        deviation = (phi - location[None]) ** 2 * weights
        if fixed_scale:
            scale = np.full_like(location, np.sqrt(deviation.sum() / (count.sum() * phi.shape[2])))
        else:
            scale = np.sqrt(deviation.sum(axis=0) / count[:, None])
        scores[m] = (phi[m] - location) / np.maximum(scale, SCALE_FLOOR)
    return scores


def score_attribute(attack: AttributeAttack, phi: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``(M, T, k)`` scores of ``attack``; the guess is the argmax over the last axis.

    Args:
        phi: ``(M, T, k)`` from :func:`completion_phi`.
        keep: ``(M, T)`` whether model m trained on target t (on its true completion).
    """
    if attack is AttributeAttack.CONFIDENCE:
        return phi.copy()
    return _offline_scores(phi, keep, fixed_scale=attack is AttributeAttack.LIRA_OFFLINE_FIXED)


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
    target's pairs share its record, so they move together (as in :mod:`truthserum.metrics`)."""
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
