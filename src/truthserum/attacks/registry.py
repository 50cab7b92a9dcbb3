"""The attack registry: every membership attack, built-in or a user's, is a name, the derived
signal it reads and a function of the shared :class:`Scoring`; :func:`register_attack` adds one
and the built-in attacks are registered through it too. A registered attack can be named in a
config's ``attacks``, and then appears in results, reports and sweeps like the built-in ones."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property

import numpy as np

from truthserum import seeding
from truthserum.attacks.inputs import AttackInputs
from truthserum.attacks.label_only import label_only
from truthserum.attacks.lira import global_threshold, lira
from truthserum.attacks.options import TUNE, AttackOptions
from truthserum.attacks.rmia import rmia_scores, tune_offline_a
from truthserum.attacks.shadows import ShadowNeed, ShadowPlan
from truthserum.attacks.signals import label_is_correct, log_true_probability, phi_from_logits
from truthserum.errors import SignalsError
from truthserum.store.logits import column_chunks


class AttackName(StrEnum):
    """The built-in membership attacks (definitions in docs/attacks.md)."""

    LIRA_ONLINE = "lira-online"
    LIRA_OFFLINE = "lira-offline"
    LIRA_ONLINE_FIXED = "lira-online-fixed"
    LIRA_OFFLINE_FIXED = "lira-offline-fixed"
    RMIA_ONLINE = "rmia-online"
    RMIA_OFFLINE = "rmia-offline"
    LABEL_ONLY = "label-only"
    GLOBAL_THRESHOLD = "global-threshold"


class Scoring:
    """What the attacks of one scoring share: the inputs, the shadow plan and derived signals.

    An attack reads ``keep`` (``(M, T)`` membership of the targets), ``target_mask(m, positions)``
    (target model m's shadows for the targets at ``positions``) and the derived signal it
    declares: ``phi`` (logit-scaled confidence, ``(M, T, A)``), ``correct`` (whether each view is
    labelled right) or ``log_p`` (log probability of the true label on the targets, then the
    population). Each signal is computed once, when the first attack reads it.
    """

    def __init__(self, inputs: AttackInputs, options: AttackOptions):
        options.validate()
        self.inputs = inputs
        self.options = options
        self.targets = inputs.targets
        self.keep = inputs.keep[:, self.targets]
        self.plan = ShadowPlan(keep=inputs.keep, count=options.shadow_models, seed=options.seed)
        self.details: dict[str, dict] = {}  # what an attack chose, e.g. a tuned parameter

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
        size = self.options.rmia.population
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
        rmia = self.options.rmia
        tune = offline and rmia.offline_a == TUNE
        half_a = {}
        if tune:
            # each half's a is tuned on the other half: one a per half, never the target's own
            half = seeding.rng(self.options.seed, "tune-halves").permutation(num_models) < num_models // 2
            for side in (True, False):
                others = np.broadcast_to((half != side)[:, None], keep.shape)
                half_a[side] = tune_offline_a(
                    log_p, keep, others, num_targets=num_targets, gamma=rmia.gamma,
                    rng=seeding.rng(self.options.seed, "tune-a", int(side)),
                )
            self.details[AttackName.RMIA_OFFLINE.value] = {"tuned_offline_a": [half_a[True], half_a[False]]}
        offline_a = None
        if offline:
            offline_a = [half_a[bool(half[m])] if tune else rmia.offline_a for m in range(num_models)]
        return rmia_scores(
            log_p, keep, lambda m, positions: self.plan.mask(m, columns[positions]), num_targets=num_targets,
            gamma=rmia.gamma, offline_a=offline_a, downdate=self.plan.count is None,
        )


@dataclass(frozen=True)
class Attack:
    """A registered membership attack.

    Attributes:
        name: how configs, results and reports name it.
        score: ``score(scoring) -> (M, T)`` float scores, higher meaning "more likely a member".
        signal: the derived signal of :class:`Scoring` it reads (``phi``, ``correct``,
            ``log_p``), or None; attacks run grouped by signal, and each signal is freed once
            the last attack reading it is done.
        needs_population: it compares targets with non-target points (RMIA), so it cannot
            run where every point is a target (the untargeted task).
        target_shadows: what it needs of each target point's shadow models (None: nothing);
            points that lack them are refused, or dropped (``skip_unsupported``), before scoring.
        population_shadows: the same of each point of its population (RMIA's references).
    """

    name: str
    score: Callable[[Scoring], np.ndarray]
    signal: str | None = None
    needs_population: bool = False
    target_shadows: ShadowNeed | None = None
    population_shadows: ShadowNeed | None = None


_REGISTRY: dict[str, Attack] = {}


def register_attack(
    name: str, score: Callable[[Scoring], np.ndarray] | None = None, *, signal: str | None = None,
    needs_population: bool = False, target_shadows: ShadowNeed | None = None,
    population_shadows: ShadowNeed | None = None,
):
    """Register a membership attack under ``name``; usable as a decorator::

        @register_attack("loss", signal="phi")
        def loss_attack(scoring):
            return scoring.phi.mean(axis=-1)

    Raises:
        ValueError: ``name`` is taken (a built-in attack's name included) or empty.
    """
    def add(function: Callable[[Scoring], np.ndarray]) -> Callable[[Scoring], np.ndarray]:
        if not name or name in _REGISTRY:
            raise ValueError(f"attack name {name!r} is {'taken' if name else 'empty'}")
        if signal is not None and not isinstance(getattr(Scoring, signal, None), cached_property):
            raise ValueError(f"attack {name!r}: unknown signal {signal!r} (phi, correct or log_p)")
        _REGISTRY[name] = Attack(name=name, score=function, signal=signal, needs_population=needs_population,
                                 target_shadows=target_shadows, population_shadows=population_shadows)
        return function

    return add if score is None else add(score)


def unregister_attack(name: str) -> None:
    """Remove a user's attack (built-in attacks stay)."""
    if name in AttackName.__members__.values():
        raise ValueError(f"{name!r} is a built-in attack")
    _REGISTRY.pop(name, None)


def registered_attacks() -> tuple[str, ...]:
    """Every registered attack's name, the built-in ones first."""
    return tuple(_REGISTRY)


def get_attack(name: str) -> Attack:
    """The attack registered as ``name``.

    Raises:
        SignalsError: no attack has that name.
    """
    try:
        return _REGISTRY[str(name)]
    except KeyError:
        raise SignalsError(f"unknown attack {name!r}; registered: {', '.join(_REGISTRY)}") from None


_IN_OUT, _OUT, _ANY = ShadowNeed.IN_AND_OUT, ShadowNeed.OUT_ONLY, ShadowNeed.ANY
for _name, _score, _signal, _targets, _population in (
    (AttackName.LIRA_ONLINE, lambda s: lira(s.phi, s.keep, s.target_mask, online=True, fixed_variance=False), "phi",
     _IN_OUT, None),
    (AttackName.LIRA_OFFLINE, lambda s: lira(s.phi, s.keep, s.target_mask, online=False, fixed_variance=False), "phi",
     _IN_OUT, None),
    (AttackName.LIRA_ONLINE_FIXED, lambda s: lira(s.phi, s.keep, s.target_mask, online=True, fixed_variance=True),
     "phi", _IN_OUT, None),
    (AttackName.LIRA_OFFLINE_FIXED, lambda s: lira(s.phi, s.keep, s.target_mask, online=False, fixed_variance=True),
     "phi", _IN_OUT, None),
    (AttackName.RMIA_ONLINE, lambda s: s.rmia(offline=False), "log_p", _ANY, _ANY),
    (AttackName.RMIA_OFFLINE, lambda s: s.rmia(offline=True), "log_p", _OUT, _OUT),
    (AttackName.LABEL_ONLY, lambda s: label_only(s.correct, s.keep, s.target_mask), "correct", _IN_OUT, None),
    (AttackName.GLOBAL_THRESHOLD, lambda s: global_threshold(s.phi), "phi", None, None),
):
    register_attack(_name.value, _score, signal=_signal, needs_population=_signal == "log_p",
                    target_shadows=_targets, population_shadows=_population)


ScoreSink = Callable[[str, np.ndarray], None]


def score_attacks_with_details(
    inputs: AttackInputs, attacks: Iterable[str], options: AttackOptions | None = None,
    *, sink: ScoreSink | None = None, on_scored: Callable[[str], None] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """:func:`score_attacks`, plus what each attack chose on its own (for rmia-offline with a
    tuned a: ``{"tuned_offline_a": [a of one half, a of the other]}``).

    With ``sink``, each attack's scores go to ``sink(name, scores)`` as soon as they are
    computed and are not kept (the returned scores are empty): a large audit then holds one
    attack's ``(M, T)`` scores at a time. ``on_scored(name)`` is called as each attack ends
    (a progress bar).
    """
    scoring = Scoring(inputs, options or AttackOptions())
    chosen = [get_attack(name) for name in attacks]
    signals = list(dict.fromkeys(attack.signal for attack in chosen))
    scores: dict[str, np.ndarray] = {}
    for signal in signals:
        for attack in (a for a in chosen if a.signal == signal):
            result = attack.score(scoring)
            if sink is None:
                scores[attack.name] = result
            else:
                sink(attack.name, result)
            del result
            if on_scored is not None:
                on_scored(attack.name)
        if signal is not None:
            scoring.release(signal)
    return {a.name: scores[a.name] for a in chosen if a.name in scores}, scoring.details


def score_attacks(
    inputs: AttackInputs, attacks: Iterable[str], options: AttackOptions | None = None
) -> dict[str, np.ndarray]:
    """Score every (model, target point) pair with each attack.

    Args:
        inputs: validated signals.
        attacks: names of registered attacks (:class:`AttackName` for the built-in ones).
        options: shadow budget and RMIA settings (defaults: the default shadows, gamma 2, a
            tuned on shadow models, every non-target point as population).

    Returns:
        attack name -> ``(M, T)`` float64 scores, higher meaning "more likely a member"; the
        ground truth is ``inputs.members``.
    """
    return score_attacks_with_details(inputs, attacks, options)[0]
