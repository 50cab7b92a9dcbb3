"""Which shadow models an attack may use when model m is the target model.

By default every other model is a shadow (leave-one-out, as in the LiRA reference code). On a
balanced design (every point in the same number of models, as truthserum's designs are) one
more is left out: for point j, the group (IN or OUT) that m does not belong to drops its last
model in cyclic order after m. Without that, a member's shadows would hold one IN model fewer
and one OUT model more than a non-member's, so the group sizes themselves would carry the
answer into the attack; discrete scores (label-only) and averages over all shadows (RMIA
online) pick that up. With the drop, the groups have n_in - 1 and n_out - 1 models whatever m's
membership. When the column counts vary (say, each model drew its members independently) the
other models' memberships are already independent of m's, and dropping one would create the
very dependence it removes elsewhere, so all other models are used. To
ask how many shadow models an attack needs without training again, a run's signals can be
re-scored with fewer: with a budget of k shadow models, each point gets k/2 shadows that
trained on it (IN) and k/2 that did not (OUT), drawn at random from the other models. That is
the online attacker's situation after training k models on random halves of the data; an
offline attack uses only the OUT half of them, as it would in that situation (Carlini et al.,
S&P 2022, section VI).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from collections.abc import Iterable
from enum import Enum

import numpy as np

from truthserum import seeding
from truthserum.errors import SignalsError

KEY_BLOCK = 1024

class ShadowNeed(Enum):
    """What an attack needs of a point's shadow models, for every target model; members in
    order of strictness (:meth:`strictest`)."""

    ANY = "any"  # a shadow of either kind (RMIA online's references)
    OUT_ONLY = "out"  # OUT shadows (RMIA offline's references)
    IN_AND_OUT = "in-and-out"  # IN and OUT shadows (LiRA, label-only): its Gaussians or histograms

    @classmethod
    def strictest(cls, needs: Iterable[ShadowNeed]) -> ShadowNeed:
        order = list(cls)
        return max(needs, key=order.index)

    def describe(self, count: int | None = None) -> str:
        """What a point needs, in words (with a shadow budget of ``count``, k/2 + 1 of each kind)."""
        if count is not None:
            return (f"{count // 2 + 1} models that trained on it and {count // 2 + 1} that did not ({count} shadow "
                    f"models: {count // 2} of each besides the target model)")
        return {
            ShadowNeed.IN_AND_OUT: "2 models that trained on it and 2 that did not (one of each besides the target "
                                   "model)",
            ShadowNeed.OUT_ONLY: "2 models that did not train on it (one besides the target model)",
            ShadowNeed.ANY: "a shadow model besides the target model",
        }[self]


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
        count: shadow models per point (k/2 IN + k/2 OUT), or None for the default shadows
            (every other model, less one on a balanced design; see the module docstring).
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
            if self.balanced:
                return self._all_but_one(target_model, columns)
            return np.broadcast_to(others[:, None], (num_models, len(columns))).copy()
        keys = self._keys(target_model, np.asarray(columns))
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

    def _keys(self, target_model: int, columns: np.ndarray) -> np.ndarray:
        """``(M, P)`` random keys that rank each point's candidate shadows. They are drawn per
        block of :data:`KEY_BLOCK` pool points from (seed, target model, block), so a point's
        key does not depend on which other points are asked for, and a chunk of points costs
        the blocks it touches, not a draw over the whole pool."""
        keys = np.empty((self.keep.shape[0], columns.size))
        blocks = columns // KEY_BLOCK
        for block in np.unique(blocks):
            here = blocks == block
            drawn = seeding.rng(self.seed, "shadows", target_model, int(block)).random((self.keep.shape[0], KEY_BLOCK))
            keys[:, here] = drawn[:, columns[here] % KEY_BLOCK]
        return keys

    @cached_property
    def balanced(self) -> bool:
        """Every point is a member of the same number of models."""
        counts = self.keep.sum(axis=0)
        return bool((counts == counts[0]).all())

    def _all_but_one(self, target_model: int, columns: np.ndarray) -> np.ndarray:
        """Every other model, less the last model in cyclic order after ``target_model`` of
        the group it does not belong to (see the module docstring)."""
        num_models = self.keep.shape[0]
        keep = self.keep[:, columns]
        mask = np.ones(keep.shape, dtype=bool)
        mask[target_model] = False
        other_group = keep != keep[target_model][None, :]  # (M, P): the group m is not in
        cyclic = ((np.arange(num_models) - target_model) % num_models).astype(np.int32)  # int32: (M, P) below
        distance = np.where(other_group, cyclic[:, None], np.int32(-1))
        # per column, the farthest model of that group; distances are distinct, so the largest
        # one names it (a max reduction vectorizes where argmax along this axis does not)
        last = (distance.max(axis=0) + target_model) % num_models
        has_other = other_group.any(axis=0)
        mask[last[has_other], np.nonzero(has_other)[0]] = False
        return mask


def lacking_shadows(keep: np.ndarray, columns: np.ndarray, *, count: int | None = None,
                    needs: ShadowNeed = ShadowNeed.IN_AND_OUT) -> np.ndarray:
    """``(len(columns),)`` bool: the points (pool indices ``columns``) for which some target
    model would find too few shadow models in :class:`ShadowPlan` ``(keep, count)``.

    With the default shadows a point needs two models of a kind (IN: trained on it; OUT: did
    not), so that one remains whichever model is the target; with a budget of k it needs
    k/2 + 1 of each kind, whatever ``needs`` says, since the draw takes k/2 of each. ``ANY``
    needs one model besides the target (and, on a balanced design, the one dropped).
    """
    columns = np.asarray(columns)
    num_models = keep.shape[0]
    members = keep[:, columns].sum(axis=0)
    others = num_models - members
    if count is not None:
        need = count // 2 + 1
        return (members < need) | (others < need)
    if needs is ShadowNeed.IN_AND_OUT:
        return (members < 2) | (others < 2)
    if needs is ShadowNeed.OUT_ONLY:
        return others < 2
    dropped = ShadowPlan(keep=keep).balanced & (members > 0) & (others > 0)
    return num_models - 1 - dropped.astype(int) < 1
