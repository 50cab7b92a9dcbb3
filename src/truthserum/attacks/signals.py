"""The membership signal LiRA models: the logit-scaled confidence in the true label."""

from __future__ import annotations

import numpy as np


def phi_from_logits(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """phi = log p_y - log sum_{y' != y} p_y', computed from logits.

    The softmax normaliser cancels, so phi = z_y - logsumexp_{c != y} z_c exactly. Computing
    it this way (in float64, with the max subtracted inside the logsumexp) stays finite when
    the softmax saturates: p_y = 1 in floating point would make log(p / (1 - p)) infinite.

    Args:
        logits: ``(..., N, A, C)`` raw model outputs for N points and A queries each.
        labels: ``(N,)`` true labels.

    Returns:
        ``(..., N, A)`` float64 phi.
    """
    z = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    num_classes = z.shape[-1]
    true_mask = labels[:, None, None] == np.arange(num_classes)[None, None, :]  # (N, 1, C)
    z_true = np.where(true_mask, z, 0.0).sum(axis=-1)
    others = np.where(true_mask, -np.inf, z)
    top = others.max(axis=-1, keepdims=True)
    log_rest = top[..., 0] + np.log(np.exp(others - top).sum(axis=-1))
    return z_true - log_rest


def log_true_probability(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """log p_y = z_y - logsumexp_c z_c in float64: the signal RMIA compares across models.

    Args:
        logits: ``(..., N, A, C)`` raw model outputs.
        labels: ``(N,)`` true labels.

    Returns:
        ``(..., N, A)`` float64 log-probabilities of the true label.
    """
    z = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    z_true = np.take_along_axis(z, np.broadcast_to(labels[:, None, None], z.shape[:-1] + (1,)), axis=-1)[..., 0]
    top = z.max(axis=-1, keepdims=True)
    log_total = top[..., 0] + np.log(np.exp(z - top).sum(axis=-1))
    return z_true - log_total


def label_is_correct(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``(..., N, A)`` bool: does the predicted label (arg max, first on ties) equal y?

    This is all a label-only attacker sees of a query."""
    return np.asarray(logits).argmax(axis=-1) == np.asarray(labels)[:, None]
