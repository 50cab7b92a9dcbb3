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

from enum import Enum

import numpy as np

from truthserum.attacks.lira import SCALE_FLOOR
from truthserum.attacks.signals import phi_from_logits
from truthserum.errors import SignalsError


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
