"""Experiment configuration: pydantic models that refuse unknown keys, read with a safe loader.

Every field has a default, so a config file names only what differs from them. Bounds are
checked here; what depends on the data (targets versus pool size, image-only options) is
checked once the data is loaded.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from torch import nn
from pydantic import Field, Strict, ValidationError, field_validator, model_validator
from pydantic import SerializerFunctionWrapHandler, model_serializer

from truthserum.attacks.registry import DEFAULT_GAMMA, DEFAULT_OFFLINE_A, TUNE, AttackName, AttackOptions
from truthserum.data import DataSource
from truthserum.errors import ConfigError
from truthserum.lm.config import LmConfig
from truthserum.logit_store import LogitDtype
from truthserum.query import MAX_SHIFT, QueryView, View, generate_views, max_views
from truthserum.schema import Count, Rate
from truthserum.schema import StrictSection as _Strict
from truthserum.tabular import ADULT_DEFAULT_ROLES, CPS_DEFAULT_ROLES, TableColumns
from truthserum.train.architectures import Architecture, build_model, check_wrn_depth
from truthserum.train.augment import Augment
from truthserum.train.ensemble import OptimizerName, Schedule, TrainSettings
from truthserum.untargeted import AdversaryStrategy


class ColumnsConfig(_Strict):
    """The roles of a table's columns; the sensitive column is a categorical feature too."""

    label: str = Field(min_length=1)
    sensitive: str = Field(min_length=1)
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()

    def table_columns(self) -> TableColumns:
        return TableColumns(
            label=self.label, sensitive=self.sensitive, numeric=self.numeric, categorical=self.categorical
        )


class DataConfig(_Strict):
    source: DataSource = DataSource.MNIST5K
    path: Path | None = Field(
        default=None,
        description="the .npz or .csv file, the folder of the UCI Adult files, or cifar-10-batches-bin",
    )
    columns: ColumnsConfig | None = Field(
        default=None, description="tables: column roles (needed for csv; cps and adult have defaults)"
    )
    pool_size: Count | None = Field(
        default=None, ge=4, description="use a seeded random subset of this many points"
    )

    @model_validator(mode="after")
    def _path_matches_source(self) -> DataConfig:
        name = self.source.value
        if self.source.needs_path and self.path is None:
            raise ValueError(f"source '{name}' needs a path")
        if not self.source.needs_path and self.path is not None:
            with_path = [source.value for source in DataSource if source.needs_path]
            raise ValueError(
                f"path is only for sources {', '.join(with_path[:-1])} and {with_path[-1]}, not '{name}'"
            )
        if self.source is DataSource.CSV and self.columns is None:
            raise ValueError("source 'csv' needs columns (label, sensitive, numeric, categorical)")
        if not self.source.is_tabular and self.columns is not None:
            raise ValueError(f"columns are only for tables (cps, csv, adult), not '{name}'")
        return self

    def table_columns(self) -> TableColumns | None:
        """The column roles: the config's, or the built-in table's defaults (None for images)."""
        if self.columns is not None:
            return self.columns.table_columns()
        return {DataSource.CPS: CPS_DEFAULT_ROLES, DataSource.ADULT: ADULT_DEFAULT_ROLES}.get(self.source)


class DesignConfig(_Strict):
    num_models: Count = Field(default=16, ge=4, le=4096)
    num_targets: Count = Field(default=100, ge=1)

    @field_validator("num_models")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError("must be even (each point is a member of exactly half the models)")
        return value


MAX_REPLICAS = 10_000


class PoisonConfig(_Strict):
    replicas: Count = Field(
        default=8, ge=0, le=MAX_REPLICAS,
        description="mislabeled copies per target; 0 runs the clean condition only",
    )


class ModelConfig(_Strict):
    architecture: Architecture = Architecture.MLP
    hidden_sizes: tuple[Count, ...] = Field(default=(256,), min_length=1, description="MLP hidden widths")
    channels: tuple[Count, ...] = Field(default=(16, 32), min_length=1, description="CNN convolution widths")
    depth: Count = Field(default=16, ge=10, le=1000, description="WRN layers, 6n + 4 (10, 16, 22, 28, ...)")
    widen: Count = Field(default=4, ge=1, le=32, description="WRN widen factor k (16k, 32k, 64k channels)")

    @field_validator("hidden_sizes", "channels")
    @classmethod
    def _positive(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(width < 1 for width in value):
            raise ValueError("widths must be positive")
        return value

    @field_validator("depth")
    @classmethod
    def _wrn_depth(cls, value: int) -> int:
        try:
            check_wrn_depth(value)
        except ConfigError as exc:
            raise ValueError(str(exc).removeprefix("model.depth ")) from None
        return value

    def build(self, *, feature_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        """One freshly initialised model of this section's architecture and sizes."""
        return build_model(
            self.architecture, feature_shape=feature_shape, num_classes=num_classes,
            hidden_sizes=self.hidden_sizes, channels=self.channels, depth=self.depth, widen=self.widen,
        )


class TrainConfig(_Strict):
    optimizer: OptimizerName = OptimizerName.ADAM
    learning_rate: Rate = Field(default=1e-3, gt=0, le=10)
    momentum: Rate = Field(default=0.9, ge=0, lt=1, description="SGD only")
    weight_decay: Rate = Field(default=0.0, ge=0)
    schedule: Schedule = Schedule.CONSTANT
    epochs: Count = Field(default=20, ge=1, le=100_000)
    batch_size: Count = Field(default=128, ge=1)
    shard_size: Count = Field(
        default=8, ge=1, description="models trained together; a finished shard is never retrained"
    )
    augment: Augment = Field(
        default=Augment.NONE, description="training augmentation of images: none, crop or flip-crop"
    )
    mixed_precision: Annotated[bool, Strict()] = Field(
        default=False, description="CUDA only: forward and loss in bfloat16; the CPU always trains in float32"
    )

    def settings(self) -> TrainSettings:
        return TrainSettings(
            optimizer=self.optimizer, learning_rate=self.learning_rate, epochs=self.epochs,
            batch_size=self.batch_size, momentum=self.momentum, weight_decay=self.weight_decay,
            schedule=self.schedule, augment=self.augment, mixed_precision=self.mixed_precision,
        )


class QueryConfig(_Strict):
    """Which views of each pool point every model is queried on; attacks average over them.

    Either ``views``, a list of named views, or ``count``, the first K views of
    :func:`~truthserum.query.generate_views` (identity, then nearest pixel shifts, each followed by
    its mirror when ``flip``). Neither means the identity view alone.
    """

    views: tuple[QueryView, ...] | None = Field(
        default=None, min_length=1, description="named views, the first identity; None with count"
    )
    count: Count | None = Field(
        default=None, ge=1, le=max_views(flip=True), description="generate this many views instead"
    )
    flip: Annotated[bool, Strict()] = Field(
        default=False, description="with count: mirrored views too (images whose mirror keeps the label)"
    )
    signals_dtype: LogitDtype = Field(
        default=LogitDtype.FLOAT32,
        description="how the membership task stores its logits (signals-<condition>-logits.npy); "
                    "float16 halves the file",
    )

    @model_validator(mode="before")
    @classmethod
    def _identity_by_default(cls, data: Any) -> Any:
        """Neither views nor count means ``views: [identity]``, so ``views`` is None exactly when
        ``count`` names the views."""
        if isinstance(data, dict) and data.get("views") is None and data.get("count") is None:
            return {**data, "views": (QueryView.IDENTITY,)}
        return data

    @field_validator("views")
    @classmethod
    def _starts_with_identity(cls, value: tuple[QueryView, ...] | None) -> tuple[QueryView, ...] | None:
        if value is None:
            return value
        if value[0] is not QueryView.IDENTITY:
            raise ValueError("the first view must be 'identity'")
        if len(set(value)) != len(value):
            raise ValueError("views must be distinct")
        return value

    @model_validator(mode="after")
    def _one_way_to_name_views(self) -> QueryConfig:
        if self.views is not None and self.count is not None:
            raise ValueError("give views or count, not both")
        if self.flip and self.count is None:
            raise ValueError("flip goes with count (list 'mirror' in views instead)")
        if self.count is not None and self.count > max_views(flip=self.flip):
            raise ValueError(
                f"count {self.count} is more than the {max_views(flip=self.flip)} views that shifts of "
                f"up to {MAX_SHIFT} pixels give{'' if self.flip else '; flip: true doubles them'}"
            )
        return self

    @model_serializer(mode="wrap")
    def _write_the_form_in_use(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Only the keys of the form in use, so a dumped config reads back (views and count
        exclude each other) and one written before ``count`` existed still matches."""
        data = handler(self)
        for key in ("views",) if self.count is not None else ("count", "flip"):
            del data[key]
        return data

    def resolved_views(self) -> tuple[View, ...]:
        """The views to query, identity first."""
        if self.count is not None:
            return generate_views(self.count, flip=self.flip)
        assert self.views is not None  # set by _identity_by_default when count is not
        return tuple(name.view for name in self.views)


class RmiaConfig(_Strict):
    """RMIA's settings (Zarifzadeh et al. 2024; definitions in docs/attacks.md)."""

    gamma: Rate = Field(default=DEFAULT_GAMMA, gt=0, le=1e6, description="likelihood-ratio threshold")
    offline_a: float | Literal["tune"] = Field(
        default=DEFAULT_OFFLINE_A,
        description="offline interpolation parameter, or 'tune' to fit it on shadow models only",
    )
    population: Count | None = Field(
        default=None, ge=1, description="population points drawn from the non-targets (default: all)"
    )

    @field_validator("offline_a", mode="before")
    @classmethod
    def _number_in_unit_interval_or_tune(cls, value: Any) -> float | str:
        if value == TUNE and isinstance(value, str):
            return value
        message = f"must be a number in [0, 1] or '{TUNE}', got {value!r}"
        if isinstance(value, bool):
            raise ValueError(message)
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(message) from None
        if not 0.0 <= number <= 1.0:
            raise ValueError(message)
        return number


class MetricsConfig(_Strict):
    """Confidence intervals and the privacy lower bound (definitions in docs/attacks.md)."""

    bootstrap: Count = Field(default=1000, ge=0, le=100_000, description="resamples of the target points; 0: none")
    confidence: Rate = Field(default=0.95, ge=0.5, lt=1, description="of the intervals and the epsilon bound")
    delta: Rate = Field(default=0.0, ge=0, lt=1, description="the delta of the epsilon lower bound")


class Task(str, Enum):
    """Which secret the experiment tries to pull out of the models."""

    MEMBERSHIP = "membership"  # was this point in the training set? (targeted poisons)
    ATTRIBUTE = "attribute"  # what is this member's sensitive field? (tables only)
    UNTARGETED = "untargeted"  # membership of every victim point, the adversary holding a share
    LM = "lm"  # a secret in a language model's training text (canaries; the lm section)


class UntargetedConfig(_Strict):
    """The untargeted task: the adversary's share of the pool and what it puts there."""

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


# The sections of the image and table tasks, which the lm task does not read.
_IMAGE_AND_TABLE_SECTIONS = ("data", "design", "poison", "model", "train", "query", "attacks", "rmia")


class RunConfig(_Strict):
    """One experiment of one task: the same keep matrix (and targets), trained clean and poisoned."""

    task: Task = Task.MEMBERSHIP
    seed: Count = Field(default=0, ge=0)
    data: DataConfig = DataConfig()
    design: DesignConfig = DesignConfig()
    poison: PoisonConfig = PoisonConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    query: QueryConfig = QueryConfig()
    attacks: tuple[AttackName, ...] = Field(default=tuple(AttackName), min_length=1)
    rmia: RmiaConfig = RmiaConfig()
    metrics: MetricsConfig = MetricsConfig()
    untargeted: UntargetedConfig = UntargetedConfig()
    lm: LmConfig = LmConfig()

    @model_validator(mode="after")
    def _sections_fit_task(self) -> RunConfig:
        """A setting the task ignores is refused rather than silently unused (compared with
        the default, so that a dumped config, which spells out every default, reads back)."""
        if self.task is Task.ATTRIBUTE and not self.data.source.is_tabular:
            raise ValueError(
                f"task 'attribute' needs a table with a sensitive column (data.source cps, csv or "
                f"adult), not '{self.data.source.value}'"
            )
        if self.task is Task.ATTRIBUTE:
            if self.design.num_models < 6:
                raise ValueError("task 'attribute' needs design.num_models >= 6 (its offline attacks need two "
                                 "shadow models that did not train on each target besides the target model)")
            if self.attacks != RunConfig.model_fields["attacks"].default or self.rmia != RmiaConfig():
                raise ValueError("task 'attribute' runs its own attacks (confidence, lira-offline, "
                                 "lira-offline-fixed); attacks and rmia are for the membership tasks")
        if self.task is not Task.LM and self.lm != LmConfig():
            raise ValueError(f"the lm section is for task 'lm', not '{self.task.value}'")
        if self.task is Task.LM:
            defaults = type(self).model_fields
            unused = [name for name in _IMAGE_AND_TABLE_SECTIONS if getattr(self, name) != defaults[name].default]
            if unused:
                raise ValueError(f"task 'lm' is configured in its lm section; it does not use {', '.join(unused)}")
        self._augment_fits_source()
        if self.task is not Task.UNTARGETED and self.untargeted != UntargetedConfig():
            raise ValueError(f"the untargeted section is for task 'untargeted', not '{self.task.value}'")
        if self.task is Task.UNTARGETED:
            if self.poison != PoisonConfig():
                raise ValueError("task 'untargeted' does not use poison: the adversary's share replaces it")
            if self.design.num_targets != DesignConfig().num_targets:
                raise ValueError("task 'untargeted' does not use design.num_targets: every victim point is a target")
        return self

    def _augment_fits_source(self) -> None:
        """Refuse augmentation the source cannot take, before anything is loaded: a table has no
        pixels, and a mirrored digit is no digit. A user's npz is checked once it is loaded."""
        augment, source = self.train.augment, self.data.source
        if augment is Augment.NONE:
            return
        if source.is_tabular:
            raise ValueError(f"train.augment '{augment.value}' needs images; data.source '{source.value}' is a table")
        if augment.flips and not source.mirror_keeps_label:
            raise ValueError(
                f"train.augment '{augment.value}' mirrors images, which does not suit data.source "
                f"'{source.value}': a mirrored digit is not the same digit (use 'crop')"
            )

    @field_validator("attacks")
    @classmethod
    def _distinct_attacks(cls, value: tuple[AttackName, ...]) -> tuple[AttackName, ...]:
        if len(set(value)) != len(value):
            raise ValueError("attacks must be distinct")
        return value

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def attack_options(self, *, shadow_models: int | None = None) -> AttackOptions:
        """The attacks' settings; ``shadow_models`` None means the default shadows."""
        return AttackOptions(
            shadow_models=shadow_models, rmia_gamma=self.rmia.gamma, rmia_offline_a=self.rmia.offline_a,
            rmia_population=self.rmia.population, seed=self.seed,
        )


def _format_validation_error(error: ValidationError, source: str) -> str:
    problems = []
    errors = error.errors()
    for item in errors:
        if any(other["loc"][: len(item["loc"])] == item["loc"] and len(other["loc"]) > len(item["loc"])
               for other in errors):
            continue  # a consequence of an error inside this value (an empty list after a bad item)
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        problems.append(f"{where}: {message}")
    return f"{source}: " + "; ".join(problems)


def parse_config(raw: Any, *, source: str = "config", base_dir: Path | None = None) -> RunConfig:
    """Validate a mapping (from YAML or JSON) into a :class:`RunConfig`.

    Relative paths (``data.path``, ``lm.corpus.path``, ``lm.model.path``) are resolved against
    ``base_dir`` (the config file's folder), so a config means the same thing whatever the
    working directory.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys to values")
    try:
        config = RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None
    if base_dir is not None:
        config = _resolve_paths(config, base_dir)
    return config


def _resolve_paths(config: RunConfig, base_dir: Path) -> RunConfig:
    """Relative ``data.path``, ``lm.corpus.path`` and ``lm.model.path`` against ``base_dir``."""
    def resolved(path: Path | None) -> Path | None:
        return path if path is None or path.is_absolute() else (base_dir / path).resolve()

    lm = config.lm
    lm = lm.model_copy(update={
        "corpus": lm.corpus.model_copy(update={"path": resolved(lm.corpus.path)}),
        "model": lm.model.model_copy(update={"path": resolved(lm.model.path)}),
    })
    data = config.data.model_copy(update={"path": resolved(config.data.path)})
    return config.model_copy(update={"data": data, "lm": lm})


def load_config(path: Path) -> RunConfig:
    """Read a YAML config with ``yaml.safe_load``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config ({exc})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    return parse_config(raw, source=str(path), base_dir=path.parent)


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML (every default filled in)."""
    return yaml.safe_dump(config.to_json_dict(), sort_keys=False)
