"""Outputs that are probabilities where logits were expected.

A model's softmax probabilities passed as logits change every attack's numbers (a second
softmax flattens them). Their logarithms are logits up to a per-row constant, which softmax
and every attack signal ignore, so probabilities are recognised and taken as log-probabilities.
"""

from __future__ import annotations

import numpy as np

PROBABILITY_TOLERANCE = 1e-4
"""How far a row's sum may be from 1 (float32 rounding of a softmax over many classes)."""

SMALLEST_PROBABILITY = float(np.finfo(np.float64).tiny)
"""Probabilities under this are taken as this before the logarithm: log(0) is -inf, which no
attack can use."""


def probability_tolerance(num_classes: int, dtype: np.dtype) -> float:
    """How far from [0, 1] a value, and from 1 a row's sum, may lie: :data:`PROBABILITY_TOLERANCE`,
    or more where the dtype (float16) cannot hold a sum of ``num_classes`` values that closely."""
    dtype = np.dtype(dtype) if np.dtype(dtype).kind == "f" else np.dtype(np.float64)
    return max(PROBABILITY_TOLERANCE, num_classes * float(np.finfo(dtype).eps))


def looks_like_probabilities(outputs: np.ndarray) -> bool:
    """True when every value lies in [0, 1] and every row (the last axis) sums to 1, within
    :func:`probability_tolerance`."""
    outputs = np.asarray(outputs)
    if outputs.size == 0:
        return False
    tolerance = probability_tolerance(outputs.shape[-1], outputs.dtype)
    if outputs.min() < -tolerance or outputs.max() > 1 + tolerance:
        return False
    return bool(np.all(np.abs(outputs.sum(axis=-1, dtype=np.float64) - 1.0) <= tolerance))


def to_log_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """``log`` of probabilities, each first raised to :data:`SMALLEST_PROBABILITY`; float64."""
    return np.log(np.maximum(np.asarray(probabilities, dtype=np.float64), SMALLEST_PROBABILITY))
