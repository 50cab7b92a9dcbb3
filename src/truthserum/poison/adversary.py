"""Untargeted poisoning: an adversary who holds a share of the training data and, without
knowing any target, makes every other party's points leak more (Tramèr et al., CCS 2022,
the multiparty setting).

The pool is split once into the victims' points and the adversary's share. Every model
trains on the whole adversary share and on half of the victims' points (the keep matrix is
over the victims only), and membership inference is evaluated on the victims' points alone.
What the adversary contributes is one of the :class:`AdversaryStrategy` values; the clean
share is the fair baseline, the same amount of honest data.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from truthserum.poison.label_flip import flip_labels


class AdversaryStrategy(str, Enum):
    """What the adversary puts into its share of the training data.

    - ``clean-share``: its points with their true labels (the baseline).
    - ``dirty-label``: its points, every one with a wrong label (y + u) mod C, u uniform in
      1..C-1. The model learns a wrong rule on the population, so a victim's point gets its
      true label only if the model memorised it: the gap between IN and OUT grows, at the
      price of the model's accuracy.
    - ``paired-flip``: half of its points, each twice: once with its true label and once
      with a wrong one. Where the population sits, the adversary's votes cancel, so the
      model's output on a victim's point is decided by whether that very point was in the
      training set, while the adversary's true copies keep the model close to the clean
      rule. The same number of rows as the other strategies.
    """

    CLEAN = "clean-share"
    DIRTY_LABEL = "dirty-label"
    PAIRED_FLIP = "paired-flip"


@dataclass(frozen=True)
class PoolSplit:
    """Which pool points belong to the victims and which to the adversary (sorted indices)."""

    victims: np.ndarray
    adversary: np.ndarray


def split_pool(*, num_points: int, adversary_fraction: float, rng: np.random.Generator) -> PoolSplit:
    """A seeded random split; the adversary gets ``round(fraction * N)`` points.

    Raises:
        ValueError: the fraction is outside (0, 1) or leaves either side empty.
    """
    if not 0.0 < adversary_fraction < 1.0:
        raise ValueError(f"the adversary's fraction must be in (0, 1), got {adversary_fraction}")
    count = int(round(adversary_fraction * num_points))
    if not 0 < count < num_points:
        raise ValueError(
            f"an adversary fraction of {adversary_fraction} of {num_points} points leaves one side empty"
        )
    order = rng.permutation(num_points)
    return PoolSplit(victims=np.sort(order[count:]), adversary=np.sort(order[:count]))


def adversary_share(
    *, x: np.ndarray, y: np.ndarray, num_classes: int, strategy: AdversaryStrategy, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The rows the adversary contributes under ``strategy``, from its own points ``x, y``.

    Every strategy contributes ``len(y)`` rows, so the comparison is at equal share.

    Returns:
        ``(x, y)`` of the adversary's contribution.
    """
    if strategy is AdversaryStrategy.CLEAN:
        return x, y
    if strategy is AdversaryStrategy.DIRTY_LABEL:
        return x, flip_labels(labels=y, num_classes=num_classes, rng=rng)
    if strategy is AdversaryStrategy.PAIRED_FLIP:
        # an odd count gives the last point one wrong copy, so the rows still total len(y)
        half = (len(y) + 1) // 2
        chosen = np.sort(rng.choice(len(y), size=half, replace=False))
        wrong = flip_labels(labels=y[chosen], num_classes=num_classes, rng=rng)
        true_rows = chosen[: len(y) - half]
        return (np.concatenate([x[true_rows], x[chosen]]),
                np.concatenate([y[true_rows], wrong]).astype(y.dtype))
    raise ValueError(f"unknown strategy {strategy!r}")
