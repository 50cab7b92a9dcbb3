"""Stage 2, design: which model trains on which pool point, and which points are targets.

As in LiRA (Carlini et al., S&P 2022), every pool point is a member of exactly half of the
models, chosen at random per point. Each model therefore has about N/2 members; the exact
count varies a little from model to model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from truthserum.errors import ConfigError, DataError


@dataclass(frozen=True)
class Design:
    """The keep matrix and the target points of one experiment.

    Attributes:
        keep: ``(M, N)`` bool, ``keep[m, i]`` is True when model m trains on pool point i.
        targets: ``(T,)`` int64, sorted pool indices of the points under attack.
    """

    keep: np.ndarray
    targets: np.ndarray

    @property
    def num_models(self) -> int:
        return int(self.keep.shape[0])

    @property
    def num_points(self) -> int:
        return int(self.keep.shape[1])


def check_num_models(num_models: int) -> None:
    """Leave-one-out LiRA needs an even count of at least 4 models (IN and OUT shadows each)."""
    if num_models < 4 or num_models % 2:
        raise ConfigError(f"the number of models must be even and at least 4, got {num_models}")


def make_keep_matrix(*, num_models: int, num_points: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``(M, N)`` keep matrix whose every column holds exactly M/2 True entries."""
    check_num_models(num_models)
    ranks = rng.random((num_models, num_points)).argsort(axis=0)
    return ranks < num_models // 2


def choose_targets(
    *, num_points: int, num_targets: int, rng: np.random.Generator, eligible: np.ndarray | None = None
) -> np.ndarray:
    """T distinct pool indices, sorted; only where ``eligible`` (all points when None)."""
    if not 1 <= num_targets <= num_points:
        raise DataError(
            f"the pool has {num_points} points, too few for {num_targets} targets"
        )
    if eligible is None:
        return np.sort(rng.choice(num_points, size=num_targets, replace=False)).astype(np.int64)
    candidates = np.nonzero(eligible)[0]
    if num_targets > candidates.size:
        raise DataError(
            f"only {candidates.size} of the {num_points} pool points can be targets, too few for "
            f"{num_targets}"
        )
    return np.sort(rng.choice(candidates, size=num_targets, replace=False)).astype(np.int64)


def make_design(
    *, num_models: int, num_points: int, num_targets: int, rng: np.random.Generator,
    eligible: np.ndarray | None = None,
) -> Design:
    """Draw the keep matrix and the targets (among the ``eligible`` points when given).

    Raises:
        DataError: the pool is too small, so that some model would have no member or no
            non-member (its train or test accuracy would be undefined).
    """
    targets = choose_targets(num_points=num_points, num_targets=num_targets, rng=rng, eligible=eligible)
    keep = make_keep_matrix(num_models=num_models, num_points=num_points, rng=rng)
    members = keep.sum(axis=1)
    if members.min() == 0 or members.max() == num_points:
        raise DataError(
            f"the pool has {num_points} points, too few for {num_models} models: "
            "some model would have no members or no non-members"
        )
    return Design(keep=keep, targets=targets)
