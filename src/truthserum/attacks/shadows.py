"""Which shadow models an attack may use when model m is the target model.

By default every other model is a shadow (leave-one-out, as in the LiRA reference code). To
ask how many shadow models an attack needs without training again, a run's signals can be
re-scored with fewer: with a budget of k shadow models, each point gets k/2 shadows that
trained on it (IN) and k/2 that did not (OUT), drawn at random from the other models. That is
the online attacker's situation after training k models on random halves of the data; an
offline attack uses only the OUT half of them, as it would in that situation (Carlini et al.,
S&P 2022, section VI).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from truthserum import seeding
from truthserum.errors import SignalsError


def check_shadow_budget(count: int, num_models: int) -> None:
    """A budget is even, at least 2, and leaves room for k/2 IN shadows besides the target."""
    if count < 2 or count % 2:
        raise SignalsError(f"the number of shadow models must be even and at least 2, got {count}")
    if count > num_models - 2:
        raise SignalsError(
            f"{count} shadow models asked for, but with {num_models} models each point has at most "
            f"{num_models - 2} besides the target model (half IN, half OUT)"
        )


@dataclass(frozen=True)
class ShadowPlan:
    """Draws the shadow models of each target model.

    Attributes:
        keep: ``(M, N)`` membership of every model on every point.
        count: shadow models per point (k/2 IN + k/2 OUT), or None for all the other models.
        seed: seeds the draw; target model m's draw depends on (seed, m) alone.
    """

    keep: np.ndarray
    count: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.count is not None:
            check_shadow_budget(self.count, self.keep.shape[0])

    def mask(self, target_model: int, columns: np.ndarray) -> np.ndarray:
        """``(M, P)`` bool: the shadows usable for each of the points ``columns`` (pool indices).

        The target model itself is never a shadow. A point's draw does not depend on which
        other points are asked for, so every attack sees the same shadows for a point.
        """
        num_models, num_points = self.keep.shape
        others = np.arange(num_models) != target_model
        if self.count is None:
            return np.broadcast_to(others[:, None], (num_models, len(columns))).copy()
        keys = seeding.rng(self.seed, "shadows", target_model).random((num_models, num_points))[:, columns]
        keep = self.keep[:, columns]
        half = self.count // 2
        mask = np.zeros(keep.shape, dtype=bool)
        for name, group in (("IN", keep), ("OUT", ~keep)):
            candidates = group & others[:, None]
            available = candidates.sum(axis=0)
            if available.min() < half:
                column = int(np.argmin(available))
                raise SignalsError(
                    f"{self.count} shadow models need {half} {name} shadows per point, but point "
                    f"{int(columns[column])} has only {int(available[column])} when model "
                    f"{target_model} is the target model"
                )
            ranked = np.where(candidates, keys, np.inf)
            cutoff = np.partition(ranked, half - 1, axis=0)[half - 1]  # the half-th smallest key
            mask |= candidates & (ranked <= cutoff[None, :])
        return mask
