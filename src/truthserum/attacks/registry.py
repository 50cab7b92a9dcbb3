"""Attack names, their options, and the functions behind them: the one place that maps a name
to code."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from functools import cached_property

import numpy as np

from truthserum import seeding
from truthserum.attacks.inputs import AttackInputs
from truthserum.attacks.label_only import label_only
from truthserum.attacks.lira import global_threshold, lira
from truthserum.attacks.rmia import rmia_scores, tune_offline_a
from truthserum.attacks.shadows import ShadowPlan
from truthserum.attacks.signals import label_is_correct, log_true_probability, phi_from_logits
from truthserum.errors import SignalsError
from truthserum.logit_store import column_chunks


class AttackName(str, Enum):
    """Membership-inference attacks (definitions in docs/attacks.md)."""

    LIRA_ONLINE = "lira-online"
    LIRA_OFFLINE = "lira-offline"
    LIRA_ONLINE_FIXED = "lira-online-fixed"
    LIRA_OFFLINE_FIXED = "lira-offline-fixed"
    RMIA_ONLINE = "rmia-online"
    RMIA_OFFLINE = "rmia-offline"
    LABEL_ONLY = "label-only"
    GLOBAL_THRESHOLD = "global-threshold"


TUNE = "tune"
DEFAULT_GAMMA = 2.0
DEFAULT_OFFLINE_A = TUNE


@dataclass(frozen=True)
class AttackOptions:
    """Settings shared by the attacks of one scoring.

    Attributes:
        shadow_models: shadows per target point (k/2 IN + k/2 OUT), or None for the default
            shadows (every other model, less one on a balanced design; see
            :class:`~truthserum.attacks.shadows.ShadowPlan`).
        rmia_gamma: RMIA's likelihood-ratio threshold (> 0).
        rmia_offline_a: RMIA offline's interpolation parameter in [0, 1], or ``"tune"`` to pick
            it on shadow models only (one a per random half of the models, tuned on the other
            half; see :mod:`truthserum.attacks.rmia`).
        rmia_population: how many non-target points serve as RMIA's population (a seeded
            random subset), or None for all of them.
        seed: seeds the shadow draw, the population subset and the tuning.
    """

    shadow_models: int | None = None
    rmia_gamma: float = DEFAULT_GAMMA
    rmia_offline_a: float | str = DEFAULT_OFFLINE_A
    rmia_population: int | None = None
    seed: int = 0

    def validate(self) -> None:
        """Raise :class:`SignalsError` naming the first bad option."""
        if not (np.isfinite(self.rmia_gamma) and self.rmia_gamma > 0):
            raise SignalsError(f"rmia gamma must be a positive number, got {self.rmia_gamma}")
        a = self.rmia_offline_a
        if a != TUNE and not (isinstance(a, int | float) and not isinstance(a, bool) and 0.0 <= a <= 1.0):
            raise SignalsError(f"rmia offline a must lie in [0, 1] or be '{TUNE}', got {a!r}")
        if self.rmia_population is not None and self.rmia_population < 1:
            raise SignalsError(f"rmia population must be at least 1, got {self.rmia_population}")
        if self.seed < 0:
            raise SignalsError(f"the seed must be a non-negative integer, got {self.seed}")


class _Scoring:
    """What the attacks of one call share: the inputs, the shadow plan and derived signals."""

    def __init__(self, inputs: AttackInputs, options: AttackOptions):
        options.validate()
        self.inputs = inputs
        self.options = options
        self.targets = inputs.targets
        self.keep = inputs.keep[:, self.targets]
        self.plan = ShadowPlan(keep=inputs.keep, count=options.shadow_models, seed=options.seed)
        self.details: dict[AttackName, dict] = {}  # what an attack chose, e.g. a tuned parameter

    def target_mask(self, m: int, positions: np.ndarray) -> np.ndarray:
        """Target model m's shadows for the targets at ``positions`` of ``targets``."""
        return self.plan.mask(m, self.targets[positions])

    def _reduce(self, signal, columns: np.ndarray, dtype) -> np.ndarray:
        """``signal(logits, labels)`` on ``columns``, read a chunk of points at a time: the
        logits (C numbers per query) are never all in memory, only the reduced signal."""
        out = np.empty((self.inputs.num_models, columns.size, self.inputs.num_views), dtype=dtype)
        labels = self.inputs.labels
        for positions, logits in column_chunks(self.inputs.logits, columns):
            out[:, positions] = signal(logits, labels[columns[positions]])
        return out

    @cached_property
    def phi(self) -> np.ndarray:
        return self._reduce(phi_from_logits, self.targets, np.float64)

    @cached_property
    def correct(self) -> np.ndarray:
        return self._reduce(label_is_correct, self.targets, np.bool_)

    @cached_property
    def population(self) -> np.ndarray:
        """Non-target pool points, or a seeded subset of them."""
        others = np.setdiff1d(np.arange(self.inputs.labels.shape[0]), self.targets)
        if others.size == 0:
            raise SignalsError(
                "rmia needs population points that are not targets, but every point is a target; "
                "name fewer points in `targets`"
            )
        size = self.options.rmia_population
        if size is not None and size < others.size:
            chosen = seeding.rng(self.options.seed, "population").choice(others.size, size, replace=False)
            others = others[np.sort(chosen)]
        return others

    @cached_property
    def rmia_columns(self) -> np.ndarray:
        """The targets, then the population points."""
        return np.r_[self.targets, self.population]

    @cached_property
    def log_p(self) -> np.ndarray:
        """log P(p | model) on :attr:`rmia_columns`, shared by online and offline RMIA."""
        return self._reduce(log_true_probability, self.rmia_columns, np.float64)

    def release(self, signal: str) -> None:
        """Forget a derived signal no attack still needs (they are the largest arrays here)."""
        self.__dict__.pop(signal, None)

    def rmia(self, *, offline: bool) -> np.ndarray:
        columns, log_p = self.rmia_columns, self.log_p
        keep = self.inputs.keep[:, columns]
        num_targets = self.targets.size
        num_models = keep.shape[0]
        tune = offline and self.options.rmia_offline_a == TUNE
        half_a = {}
        if tune:
            # each half's a is tuned on the other half: one a per half, never the target's own
            half = seeding.rng(self.options.seed, "tune-halves").permutation(num_models) < num_models // 2
            for side in (True, False):
                others = np.broadcast_to((half != side)[:, None], keep.shape)
                half_a[side] = tune_offline_a(
                    log_p, keep, others, num_targets=num_targets, gamma=self.options.rmia_gamma,
                    rng=seeding.rng(self.options.seed, "tune-a", int(side)),
                )
            self.details[AttackName.RMIA_OFFLINE] = {"tuned_offline_a": [half_a[True], half_a[False]]}
        offline_a = None
        if offline:
            offline_a = [half_a[bool(half[m])] if tune else self.options.rmia_offline_a for m in range(num_models)]
        return rmia_scores(
            log_p, keep, lambda m, positions: self.plan.mask(m, columns[positions]), num_targets=num_targets,
            gamma=self.options.rmia_gamma, offline_a=offline_a, downdate=self.plan.count is None,
        )


# The derived signal each attack reads; attacks run grouped by it, and each signal is freed
# once the last attack that reads it is done.
SIGNAL_OF = {
    AttackName.LIRA_ONLINE: "phi", AttackName.LIRA_OFFLINE: "phi", AttackName.LIRA_ONLINE_FIXED: "phi",
    AttackName.LIRA_OFFLINE_FIXED: "phi", AttackName.GLOBAL_THRESHOLD: "phi", AttackName.LABEL_ONLY: "correct",
    AttackName.RMIA_ONLINE: "log_p", AttackName.RMIA_OFFLINE: "log_p",
}

ATTACKS: dict[AttackName, Callable[[_Scoring], np.ndarray]] = {
    AttackName.LIRA_ONLINE: lambda s: lira(s.phi, s.keep, s.target_mask, online=True, fixed_variance=False),
    AttackName.LIRA_OFFLINE: lambda s: lira(s.phi, s.keep, s.target_mask, online=False, fixed_variance=False),
    AttackName.LIRA_ONLINE_FIXED: lambda s: lira(s.phi, s.keep, s.target_mask, online=True, fixed_variance=True),
    AttackName.LIRA_OFFLINE_FIXED: lambda s: lira(s.phi, s.keep, s.target_mask, online=False, fixed_variance=True),
    AttackName.RMIA_ONLINE: lambda s: s.rmia(offline=False),
    AttackName.RMIA_OFFLINE: lambda s: s.rmia(offline=True),
    AttackName.LABEL_ONLY: lambda s: label_only(s.correct, s.keep, s.target_mask),
    AttackName.GLOBAL_THRESHOLD: lambda s: global_threshold(s.phi),
}


ScoreSink = Callable[[AttackName, np.ndarray], None]


def score_attacks_with_details(
    inputs: AttackInputs, attacks: Iterable[AttackName], options: AttackOptions | None = None,
    *, sink: ScoreSink | None = None,
) -> tuple[dict[AttackName, np.ndarray], dict[AttackName, dict]]:
    """:func:`score_attacks`, plus what each attack chose on its own (for rmia-offline with a
    tuned a: ``{"tuned_offline_a": [a of one half, a of the other]}``).

    With ``sink``, each attack's scores go to ``sink(name, scores)`` as soon as they are
    computed and are not kept (the returned scores are empty): a large audit then holds one
    attack's ``(M, T)`` scores at a time.
    """
    scoring = _Scoring(inputs, options or AttackOptions())
    names = [AttackName(name) for name in attacks]
    signals = list(dict.fromkeys(SIGNAL_OF[name] for name in names))
    scores: dict[AttackName, np.ndarray] = {}
    for signal in signals:
        for name in (n for n in names if SIGNAL_OF[n] == signal):
            result = ATTACKS[name](scoring)
            if sink is None:
                scores[name] = result
            else:
                sink(name, result)
            del result
        scoring.release(signal)
    return {name: scores[name] for name in names if name in scores}, scoring.details


def score_attacks(
    inputs: AttackInputs, attacks: Iterable[AttackName], options: AttackOptions | None = None
) -> dict[AttackName, np.ndarray]:
    """Score every (model, target point) pair with each attack.

    Args:
        inputs: validated signals.
        attacks: which attacks to run.
        options: shadow budget and RMIA settings (defaults: the default shadows, gamma 2, a
            tuned on shadow models, every non-target point as population).

    Returns:
        attack -> ``(M, T)`` float64 scores, higher meaning "more likely a member"; the
        ground truth is ``inputs.members``.
    """
    return score_attacks_with_details(inputs, attacks, options)[0]
