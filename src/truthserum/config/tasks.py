"""One config model per task, each owning the sections it reads; :data:`RunConfig` is their
union, told apart by ``task``. A section another task owns is refused rather than silently
unused (see :func:`truthserum.config.loading.parse_config`)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Literal, Union

from pydantic import Field, field_validator, model_validator

from truthserum.attacks.options import AttackOptions, RmiaOptions
from truthserum.attacks.registry import AttackName, registered_attacks
from truthserum.config.defense import (
    DefenseConfig, DefenseKind, ExactReplicas, NoDefense, PoisonStrategy, StrategyKind,
)
from truthserum.config.lm import LmConfig
from truthserum.config.schema import Count, Rate, StrictSection
from truthserum.config.sections import (
    DataConfig, DesignConfig, MetricsConfig, ModelConfig, PoisonConfig, QueryConfig, TrainConfig,
)
from truthserum.data.datasets import DataSource
from truthserum.poison.adversary import AdversaryStrategy
from truthserum.train.augment import Augment


class Task(str, Enum):
    """Which secret the experiment tries to pull out of the models."""

    MEMBERSHIP = "membership"  # was this point in the training set? (targeted poisons)
    ATTRIBUTE = "attribute"  # what is this member's sensitive field? (tables only)
    UNTARGETED = "untargeted"  # membership of every victim point, the adversary holding a share
    LM = "lm"  # a secret in a language model's training text (canaries; the lm section)
    DEFENSES = "defenses"  # targeted membership under each defense, against each poison strategy


class AdversaryConfig(StrictSection):
    """The untargeted task's ``untargeted`` section: the adversary's share of the pool and what
    it puts there."""

    adversary_fraction: Rate = Field(default=0.5, gt=0, lt=1, description="share of the pool the adversary holds")
    strategies: tuple[AdversaryStrategy, ...] = Field(
        default=(AdversaryStrategy.DIRTY_LABEL, AdversaryStrategy.PAIRED_FLIP), min_length=1,
        description="poisoned shares, each compared with the clean share (always run)",
    )

    @field_validator("strategies")
    @classmethod
    def _distinct_poisoned(cls, value: tuple[AdversaryStrategy, ...]) -> tuple[AdversaryStrategy, ...]:
        if len(set(value)) != len(value):
            raise ValueError("strategies must be distinct")
        if AdversaryStrategy.CLEAN in value:
            raise ValueError(f"'{AdversaryStrategy.CLEAN.value}' is the baseline and always runs; list poisoned strategies")
        return value


# Keys that change only how signals are scored, never what is trained: a run directory may be
# reopened with other values, and its attacks are simply run again.
SCORING_KEYS = ("attacks", "rmia", "metrics")

# Keys naming a file or folder (dotted). A run directory compares what they hold, through the
# fingerprints it records (pool.json, corpus.json), not their text, so that a run directory
# moved or copied elsewhere, with its data, still resumes.
PATH_KEYS = ("data.path", "lm.corpus.path", "lm.pretrain.path", "lm.model.path")

_SEED = Field(default=0, ge=0, le=2**63 - 1,
               description="seeds every random draw; the same config and seed give the same numbers")
_ATTACKS = Field(
    default=tuple(name.value for name in AttackName), min_length=1,
    description="membership attacks to run, in this order: built-in ones, or any registered with register_attack",
)


_UNTARGETED_ATTACKS = Field(
    default=_ATTACKS.default, min_length=1,
    description="membership attacks to run on the victims, in this order; those needing a population (RMIA) are "
                "skipped",
)
_DATA = Field(default=DataConfig(), description="the pool of points: where it comes from and how many of them")
_DESIGN = Field(default=DesignConfig(), description="how many models there are, and how many target points")
_POISON = Field(default=PoisonConfig(), description="the adversary's poisons: mislabeled replicas of each target")
_MODEL = Field(default=ModelConfig(), description="the architecture every model is built with, and its sizes")
_TRAIN = Field(default=TrainConfig(), description="how every model is trained: optimizer, schedule, epochs, batches")
_QUERY = Field(default=QueryConfig(), description="which views of each point every trained model is queried on")
_RMIA = Field(default=RmiaOptions(), description="the options of the rmia-online and rmia-offline attacks")
_METRICS = Field(default=MetricsConfig(), description="the bootstrap confidence intervals and the epsilon lower bound")


class _TaskConfig(StrictSection):
    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _registered_and_distinct(value: tuple[str, ...]) -> tuple[str, ...]:
    known = registered_attacks()
    unknown = [name for name in value if name not in known]
    if unknown:
        name = unknown[0] if len(unknown[0]) <= 60 else unknown[0][:60] + "..."
        raise ValueError(f"unknown attack {name!r}; registered: {', '.join(known)}")
    if len(set(value)) != len(value):
        raise ValueError("attacks must be distinct")
    return value


def _check_augment_fits_source(train: TrainConfig, data: DataConfig) -> None:
    """Refuse augmentation the source cannot take, before anything is loaded: a table has no
    pixels, and a mirrored digit is no digit. A user's npz is checked once it is loaded."""
    augment, source = train.augment, data.source
    if augment is Augment.NONE:
        return
    if source.is_tabular:
        raise ValueError(f"train.augment '{augment.value}' needs images; data.source '{source.value}' is a table")
    if augment.flips and not source.mirror_keeps_label:
        raise ValueError(
            f"train.augment '{augment.value}' mirrors images, which does not suit data.source "
            f"'{source.value}': a mirrored digit is not the same digit (use 'crop')"
        )


def _check_defense_fits(defense, train: TrainConfig) -> None:
    if defense.kind is DefenseKind.DP_SGD and train.augment is not Augment.NONE:
        raise ValueError("defense dp-sgd trains without augmentation (its batches are Poisson-sampled rows); "
                         "set train.augment: none")
    if defense.kind is DefenseKind.DP_SGD and train.mixed_precision:
        raise ValueError("defense dp-sgd trains in float32 (its clipping needs every example's exact gradient "
                         "norm); set train.mixed_precision: false")


def _attack_options(config: MembershipConfig | UntargetedConfig | DefensesConfig,
                    shadow_models: int | None) -> AttackOptions:
    return AttackOptions(shadow_models=shadow_models, seed=config.seed, rmia=config.rmia)


class MembershipConfig(_TaskConfig):
    """Targeted membership inference: the same keep matrix and targets trained clean and
    poisoned (mislabeled replicas of each target)."""

    task: Literal[Task.MEMBERSHIP] = Field(
        default=Task.MEMBERSHIP,
        description="selects targeted membership inference, the task a config without task runs",
    )
    seed: Count = _SEED
    data: DataConfig = _DATA
    design: DesignConfig = _DESIGN
    poison: PoisonConfig = _POISON
    model: ModelConfig = _MODEL
    train: TrainConfig = _TRAIN
    query: QueryConfig = _QUERY
    attacks: tuple[str, ...] = _ATTACKS
    rmia: RmiaOptions = _RMIA
    metrics: MetricsConfig = _METRICS
    defense: DefenseConfig = Field(
        default=NoDefense(),
        description="what the training pipeline does against poisons, to every model's training set in every "
                    "condition: none, dedup-exact, conflicting-labels, near-duplicates, loss-filter or dp-sgd (a "
                    "kind whose settings all have defaults may be given by its name alone)",
    )

    _known_attacks = field_validator("attacks")(_registered_and_distinct)

    @model_validator(mode="after")
    def _augment_fits_source(self) -> MembershipConfig:
        _check_augment_fits_source(self.train, self.data)
        _check_defense_fits(self.defense, self.train)
        strategy = self.poison.strategy
        if strategy.kind is StrategyKind.ADAPTIVE:
            if self.defense.kind is not DefenseKind.NONE:
                raise ValueError("poison.strategy adaptive runs without a defense (its calibration models would "
                                 "have to train behind the same defense); drop defense, or use a fixed budget")
            if strategy.max_poisons is None and self.poison.replicas == 0:
                raise ValueError("poison.strategy adaptive needs a total budget: poison.replicas >= 1 (the fixed "
                                 "budget it must not exceed) or poison.strategy.max_poisons")
        return self

    def attack_options(self, *, shadow_models: int | None = None) -> AttackOptions:
        """The attacks' settings; ``shadow_models`` None means the default shadows."""
        return _attack_options(self, shadow_models)


class AttributeConfig(_TaskConfig):
    """Attribute inference on a table: a member's sensitive field, with mislabeled replicas of
    every candidate completion as poisons. It runs its own attacks (confidence, lira-offline,
    lira-offline-fixed)."""

    task: Literal[Task.ATTRIBUTE] = Field(
        default=Task.ATTRIBUTE, description="selects attribute inference of the sensitive column of a table"
    )
    seed: Count = _SEED
    data: DataConfig = Field(
        default=DataConfig(), description="the table (cps, adult or csv) whose sensitive column is inferred"
    )
    design: DesignConfig = Field(
        default=DesignConfig(), description="how many models there are (at least 6), and how many target points"
    )
    poison: PoisonConfig = Field(
        default=PoisonConfig(), description="the poisons: mislabeled replicas of every candidate completion of a target"
    )
    model: ModelConfig = _MODEL
    train: TrainConfig = _TRAIN
    query: QueryConfig = _QUERY
    metrics: MetricsConfig = Field(
        default=MetricsConfig(),
        description="the bootstrap confidence intervals (delta is unused: no epsilon bound here)",
    )

    @model_validator(mode="after")
    def _fits_the_task(self) -> AttributeConfig:
        source = self.data.source
        if not source.is_tabular or source in (DataSource.BREAST_CANCER, DataSource.WINE):
            why = "every feature of it is numeric" if source.is_tabular else "it is not a table"
            raise ValueError(
                f"task 'attribute' needs a table with a categorical sensitive column to infer (data.source cps, "
                f"adult, or csv with data.columns.sensitive), not '{source.value}': {why}"
            )
        columns = self.data.table_columns()
        if columns is None or columns.sensitive is None:
            raise ValueError("task 'attribute' needs data.columns.sensitive: the categorical column it infers")
        if self.design.num_models < 6:
            raise ValueError("task 'attribute' needs design.num_models >= 6 (its offline attacks need two "
                             "shadow models that did not train on each target besides the target model)")
        if self.poison.strategy.kind is not StrategyKind.EXACT:
            raise ValueError("task 'attribute' poisons with exact replicas of each completion (poison.strategy: exact)")
        _check_augment_fits_source(self.train, self.data)
        return self


class UntargetedConfig(_TaskConfig):
    """Untargeted poisoning: the adversary holds a share of the pool and poisons it; every
    victim point is a membership target."""

    task: Literal[Task.UNTARGETED] = Field(
        default=Task.UNTARGETED,
        description="selects untargeted poisoning: membership of every victim point, the adversary holding a share",
    )
    seed: Count = _SEED
    data: DataConfig = _DATA
    design: DesignConfig = Field(
        default=DesignConfig(),
        description="how many models there are (num_targets is unused: every victim is a target)",
    )
    model: ModelConfig = _MODEL
    train: TrainConfig = _TRAIN
    query: QueryConfig = _QUERY
    attacks: tuple[str, ...] = _UNTARGETED_ATTACKS
    rmia: RmiaOptions = Field(
        default=RmiaOptions(), description="RMIA's options; unused here, as RMIA is skipped (no population points)"
    )
    metrics: MetricsConfig = _METRICS
    untargeted: AdversaryConfig = Field(
        default=AdversaryConfig(),
        description="the adversary's share of the pool and the poisoned strategies to compare",
    )

    _known_attacks = field_validator("attacks")(_registered_and_distinct)

    @model_validator(mode="after")
    def _fits_the_task(self) -> UntargetedConfig:
        if self.design.num_targets != DesignConfig().num_targets:
            raise ValueError("task 'untargeted' does not use design.num_targets: every victim point is a target")
        _check_augment_fits_source(self.train, self.data)
        return self

    def attack_options(self, *, shadow_models: int | None = None) -> AttackOptions:
        """The attacks' settings; ``shadow_models`` None means the default shadows."""
        return _attack_options(self, shadow_models)


class LanguageModelConfig(_TaskConfig):
    """Secrets in language models: canaries in the training text, configured in the ``lm``
    section."""

    task: Literal[Task.LM] = Field(
        default=Task.LM,
        description="selects secret extraction from language models (canaries), set up in the lm section",
    )
    seed: Count = _SEED
    metrics: MetricsConfig = Field(
        default=MetricsConfig(), description="the bootstrap confidence intervals, over canaries (delta is unused)"
    )
    lm: LmConfig = Field(
        default=LmConfig(), description="the corpus, models, training, canaries, poisons and exposure measurement"
    )


def _distinct_kinds(value: tuple, *, what: str, baseline: str | None = None) -> tuple:
    kinds = [item.kind.value for item in value]
    if baseline is not None and baseline in kinds:
        raise ValueError(f"'{baseline}' is the baseline and always runs; list the others")
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"each {what} at most once")
    return value


class DefensesConfig(_TaskConfig):
    """The defense matrix: targeted membership inference trained under every defense (rows, no
    defense included) against every poison strategy (columns, the clean baseline included), on
    one keep matrix and one set of targets and wrong labels."""

    task: Literal[Task.DEFENSES] = Field(
        default=Task.DEFENSES, description="selects the defense matrix: each defense against each poison strategy",
    )
    seed: Count = _SEED
    data: DataConfig = _DATA
    design: DesignConfig = _DESIGN
    poison: PoisonConfig = Field(
        default=PoisonConfig(), description="replicas per target (every strategy's); the strategies are listed below",
    )
    model: ModelConfig = _MODEL
    train: TrainConfig = _TRAIN
    query: QueryConfig = _QUERY
    attacks: tuple[str, ...] = _ATTACKS
    rmia: RmiaOptions = _RMIA
    metrics: MetricsConfig = _METRICS
    defenses: tuple[DefenseConfig, ...] = Field(
        min_length=1, description="the rows, each kind at most once, by name alone where its settings all have "
                                  "defaults; no defense (none) always runs first",
    )
    strategies: tuple[PoisonStrategy, ...] = Field(
        default=(ExactReplicas(),), min_length=1,
        description="the columns, each kind at most once (exact, perturbed with its norm, blended); the clean "
                    "condition (no poisons) always runs first",
    )

    _known_attacks = field_validator("attacks")(_registered_and_distinct)

    @field_validator("defenses")
    @classmethod
    def _distinct_defenses(cls, value: tuple) -> tuple:
        return _distinct_kinds(value, what="defense kind", baseline=DefenseKind.NONE.value)

    @field_validator("strategies")
    @classmethod
    def _distinct_strategies(cls, value: tuple) -> tuple:
        return _distinct_kinds(value, what="strategy kind")  # 'clean' is refused as a kind: see _bare_kind

    @model_validator(mode="after")
    def _fits_the_task(self) -> DefensesConfig:
        if self.poison.strategy.kind is not StrategyKind.EXACT:
            raise ValueError("task 'defenses' lists its poison strategies in strategies, not poison.strategy")
        if self.poison.replicas == 0:
            raise ValueError("task 'defenses' needs poison.replicas >= 1 (every strategy's replicas per target)")
        _check_augment_fits_source(self.train, self.data)
        for defense in self.defenses:
            _check_defense_fits(defense, self.train)
        return self

    def attack_options(self, *, shadow_models: int | None = None) -> AttackOptions:
        """The attacks' settings; ``shadow_models`` None means the default shadows."""
        return _attack_options(self, shadow_models)


TASK_CONFIGS: dict[Task, type[_TaskConfig]] = {
    Task.MEMBERSHIP: MembershipConfig,
    Task.ATTRIBUTE: AttributeConfig,
    Task.UNTARGETED: UntargetedConfig,
    Task.LM: LanguageModelConfig,
    Task.DEFENSES: DefensesConfig,
}

# One experiment of one task; ``task`` (default membership) says which model reads it.
RunConfig = Annotated[
    Union[MembershipConfig, AttributeConfig, UntargetedConfig, LanguageModelConfig, DefensesConfig],  # noqa: UP007
    Field(discriminator="task"),
]
