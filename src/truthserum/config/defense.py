"""The ``defense`` section (what the training pipeline does to every model's training set) and
the poison strategies that try to get past it.

Each defense and each strategy is a small section told apart by ``kind``; a kind without
settings may be written as its bare name (``defense: dedup-exact``, ``strategy: exact``).
The defenses themselves are in :mod:`truthserum.defense`, the strategies in
:mod:`truthserum.poison.evasive`.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Literal, Union

from pydantic import BeforeValidator, Field, field_validator, model_validator

from truthserum.config.schema import Rate, StrictSection


class DefenseKind(str, Enum):
    NONE = "none"
    DEDUP_EXACT = "dedup-exact"
    CONFLICTING_LABELS = "conflicting-labels"
    NEAR_DUPLICATES = "near-duplicates"
    LOSS_FILTER = "loss-filter"
    DP_SGD = "dp-sgd"


class StrategyKind(str, Enum):
    EXACT = "exact"
    PERTURBED = "perturbed"
    BLENDED = "blended"
    ADAPTIVE = "adaptive"  # exact replicas, a budget per target: task membership's poison.strategy only


class AdaptiveGoal(str, Enum):
    """What an adaptive budget is chosen for (see :mod:`truthserum.poison.adaptive`)."""

    LABEL_ONLY = "label-only"  # models that trained on the target label it right, the others do not
    LIRA = "lira"  # the IN and OUT models' logit-scaled confidences lie furthest apart


class NoDefense(StrictSection):
    """Every model trains on its whole training set, poisons included."""

    kind: Literal[DefenseKind.NONE] = Field(default=DefenseKind.NONE, description="none: no defense")


class DedupExact(StrictSection):
    """Drop exact duplicate inputs, keeping the first in the training set's order (the pool's
    points come before the poisons, so a member target keeps its own label)."""

    kind: Literal[DefenseKind.DEDUP_EXACT] = Field(
        default=DefenseKind.DEDUP_EXACT, description="dedup-exact: one copy of every input")


class ConflictingLabels(StrictSection):
    """Drop every copy of an input that appears in one training set with more than one label."""

    kind: Literal[DefenseKind.CONFLICTING_LABELS] = Field(default=DefenseKind.CONFLICTING_LABELS,
        description="conflicting-labels: no input that carries two labels"
    )


class NearDuplicates(StrictSection):
    """Drop every point within ``radius`` (Euclidean, in the models' input space) of a point kept
    before it in the training set's order: one point per cluster of near duplicates survives."""

    kind: Literal[DefenseKind.NEAR_DUPLICATES] = Field(
        default=DefenseKind.NEAR_DUPLICATES, description="near-duplicates: one point per neighbourhood")
    radius: Rate = Field(
        gt=0, description="Euclidean distance in the models' input space (mnist5k: pixels in [0, 1], "
                          "nearest other digit at 1.65 or more for 99% of them)",
    )


class LossFilter(StrictSection):
    """Train every model on its whole training set, drop the ``fraction`` of its points with the
    highest loss under it, and train again from the same initialisation."""

    kind: Literal[DefenseKind.LOSS_FILTER] = Field(
        default=DefenseKind.LOSS_FILTER, description="loss-filter: drop the worst-fitted points, retrain")
    fraction: Rate = Field(default=0.05, gt=0, lt=0.5, description="share of each training set dropped")


class Accountant(str, Enum):
    """Opacus's accountants: ``prv`` (privacy random variables, Gopi et al. 2021: the tightest)
    or ``rdp`` (Renyi DP, Mironov 2017)."""

    PRV = "prv"
    RDP = "rdp"


class DpSgd(StrictSection):
    """DP-SGD (Abadi et al. 2016): Poisson-sampled batches, every example's gradient clipped to
    ``clip_norm``, Gaussian noise calibrated by the accountant to (``epsilon``, ``delta``) per
    example over the whole training run."""

    kind: Literal[DefenseKind.DP_SGD] = Field(
        default=DefenseKind.DP_SGD, description="dp-sgd: differentially private training")
    epsilon: Rate = Field(default=8.0, gt=0, le=1000, description="the per-example privacy budget")
    delta: Rate = Field(default=1e-5, gt=0, lt=1, description="the per-example delta")
    clip_norm: Rate = Field(default=1.0, gt=0, description="every example's gradient is scaled to at most this L2 norm")
    accountant: Accountant = Field(
        default=Accountant.PRV, description="calibrates the noise (prv or rdp); the group epsilon is always RDP's",
    )


def _bare_kind(kinds: type[Enum], what: str, baseline: str, refused: dict[str, str] | None = None):
    """``dedup-exact`` stands for ``{kind: dedup-exact}``; an unknown kind is named in one line,
    and the ``baseline`` (which always runs) is pointed out as such; a kind in ``refused`` is
    refused with its reason."""
    known = [kind.value for kind in kinds if kind.value not in (refused or {})]

    def expand(value: Any) -> Any:
        kind = value if isinstance(value, str) else value.get("kind") if isinstance(value, dict) else None
        if refused and isinstance(kind, str) and kind in refused:
            raise ValueError(refused[kind])
        value = {"kind": value} if isinstance(value, str) else value
        if isinstance(value, dict) and value.get("kind") == baseline and baseline not in known:
            raise ValueError(f"'{baseline}' is the baseline and always runs; list the {what} kinds: {', '.join(known)}")
        if isinstance(value, dict) and "kind" not in value:
            raise ValueError(f"a {what} needs its kind: one of {', '.join(known)}")
        if isinstance(value, dict) and value["kind"] not in known:
            raise ValueError(f"unknown {what} {value['kind']!r}; one of: {', '.join(known)}")
        return value

    return BeforeValidator(expand)


DefenseConfig = Annotated[
    Union[NoDefense, DedupExact, ConflictingLabels, NearDuplicates, LossFilter, DpSgd],  # noqa: UP007
    Field(discriminator="kind"),
    _bare_kind(DefenseKind, "defense", "none"),
]


class ExactReplicas(StrictSection):
    """Truth Serum's poisons: identical copies of the target with the wrong label."""

    kind: Literal[StrategyKind.EXACT] = Field(
        default=StrategyKind.EXACT, description="exact: identical mislabeled copies")


class PerturbedReplicas(StrictSection):
    """Every replica the target plus its own Gaussian noise scaled to L2 norm ``norm``, so no
    two replicas, and no replica and its target, are duplicates."""

    kind: Literal[StrategyKind.PERTURBED] = Field(
        default=StrategyKind.PERTURBED, description="perturbed: a distinct noisy copy each")
    norm: Rate = Field(gt=0, description="L2 norm of every replica's noise, in the models' input space")


class BlendedReplicas(StrictSection):
    """Every replica ``(1 - blend) * target + blend * d``, where ``d`` is a distinct pool point
    that carries the wrong label: each poison looks like a point of its own label and lies far
    from every other point, so neither the near-duplicate nor the loss filter singles it out."""

    kind: Literal[StrategyKind.BLENDED] = Field(
        default=StrategyKind.BLENDED, description="blended: the target mixed with a real point of the wrong label")
    blend: Rate = Field(default=0.3, gt=0, lt=1, description="weight of the wrong-label point")


class AdaptiveReplicas(StrictSection):
    """Exact replicas, as many per target as that target needs: chosen from ``budgets`` on
    calibration models the adversary trains itself, never on the models under attack, so that
    the total stays within ``max_poisons`` (Chaudhari et al., ICLR 2024)."""

    kind: Literal[StrategyKind.ADAPTIVE] = Field(
        default=StrategyKind.ADAPTIVE, description="adaptive: a replica count per target, chosen on calibration models")
    goal: AdaptiveGoal = Field(
        default=AdaptiveGoal.LABEL_ONLY,
        description="label-only: the models that trained on the target label it right and the others do not; "
                    "lira: the IN and OUT models' logit-scaled confidences lie furthest apart",
    )
    budgets: tuple[Annotated[int, Field(ge=0, le=1_000)], ...] = Field(
        default=(0, 1, 2, 4, 8), min_length=2, max_length=16,
        description="the candidate replica counts per target, increasing, 0 first (a target may get none)",
    )
    calibration_models: Annotated[int, Field(ge=4, le=10_000)] = Field(
        default=40, description="models trained to choose the budgets, at least 2 per candidate budget (half of "
                                "them train on each target); their cost is reported apart",
    )
    max_poisons: Annotated[int, Field(ge=1, le=100_000_000)] | None = Field(
        default=None, description="the most poisons in all; null: the fixed budget's, poison.replicas x targets",
    )

    @field_validator("budgets")
    @classmethod
    def _increasing_from_zero(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if value[0] != 0 or any(b <= a for a, b in zip(value, value[1:])):
            raise ValueError("budgets must increase and start at 0, e.g. [0, 1, 2, 4, 8]")
        return value

    @model_validator(mode="after")
    def _two_models_per_budget(self) -> AdaptiveReplicas:
        if self.calibration_models < 2 * len(self.budgets):
            raise ValueError(f"calibration_models must be at least 2 per candidate budget ({2 * len(self.budgets)} "
                             f"for {len(self.budgets)} budgets): one that trains on each target and one that does not")
        return self


ADAPTIVE_ONLY_IN_MEMBERSHIP = ("adaptive budgets are chosen per target for task membership's poison.strategy; "
                               "the defense matrix compares fixed budgets")

PoisonStrategy = Annotated[
    Union[ExactReplicas, PerturbedReplicas, BlendedReplicas],  # noqa: UP007
    Field(discriminator="kind"),
    _bare_kind(StrategyKind, "poison strategy", "clean", refused={"adaptive": ADAPTIVE_ONLY_IN_MEMBERSHIP}),
]

# task membership's poison.strategy: what a replica is, or an adaptive budget of exact ones
MembershipPoisonStrategy = Annotated[
    Union[ExactReplicas, PerturbedReplicas, BlendedReplicas, AdaptiveReplicas],  # noqa: UP007
    Field(discriminator="kind"),
    _bare_kind(StrategyKind, "poison strategy", "clean"),
]


def defense_name(defense: Any) -> str:
    return defense.kind.value


def strategy_name(strategy: Any) -> str:
    return strategy.kind.value
