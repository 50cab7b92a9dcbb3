"""The sections that several tasks' configs share: data, design, poisons, model, training,
queries and metrics (RMIA's options are its own: :mod:`truthserum.attacks.options`). Every field has a default, so a config file names only
what differs from them; bounds are checked here, and what depends on the data (targets versus
pool size, image-only options) once the data is loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SerializerFunctionWrapHandler, Strict, field_validator, model_serializer, model_validator
from torch import nn

from truthserum.config.defense import ExactReplicas, MembershipPoisonStrategy
from truthserum.config.schema import Count, Rate
from truthserum.config.schema import StrictSection as _Strict
from truthserum.data.datasets import DEFAULT_ROLES, DataSource
from truthserum.data.tables import REST, TableColumns
from truthserum.errors import ConfigError
from truthserum.query.views import MAX_SHIFT, QueryView, View, generate_views, max_views, noise_views
from truthserum.store.logits import LogitDtype
from truthserum.train.architectures import Architecture, build_model, check_wrn_depth
from truthserum.train.augment import Augment
from truthserum.train.ensemble import OptimizerName, Schedule, TrainSettings


class ColumnsConfig(_Strict):
    """The roles of a table's columns. The sensitive column, when there is one, is a categorical
    feature too. ``numeric: rest`` (or ``categorical: rest``) takes every column of the table that
    no other role names, resolved when the table is read; the config keeps the word ``rest``."""

    label: str = Field(min_length=1, description="the column the models predict")
    sensitive: str | None = Field(
        default=None, min_length=1,
        description="the column attribute inference guesses (2 to 64 values), required by that task; for other "
                    "tasks optional, one more categorical feature",
    )
    numeric: tuple[str, ...] | Literal["rest"] = Field(
        default=(), description="feature columns of numbers, standardised over the pool; or rest: every column "
                                "no other role names"
    )
    categorical: tuple[str, ...] | Literal["rest"] = Field(
        default=(), description="feature columns one-hot encoded over the values seen in the pool; or rest: every "
                                "column no other role names"
    )

    @field_validator("numeric", "categorical", mode="before")
    @classmethod
    def _names_or_rest(cls, value: Any) -> Any:
        """One plain message rather than one per member of the union."""
        if isinstance(value, str):
            if value != REST:
                raise ValueError(f"must be a list of column names or '{REST}', got {value!r}")
        elif not isinstance(value, list | tuple) or not all(isinstance(name, str) for name in value):
            raise ValueError(f"must be a list of column names or '{REST}'")
        return value

    @model_validator(mode="after")
    def _some_features(self) -> ColumnsConfig:
        if self.numeric == REST and self.categorical == REST:
            raise ValueError(f"numeric and categorical cannot both be '{REST}'; name the columns of one of them")
        if self.sensitive is None and not self.numeric and not self.categorical:
            raise ValueError(f"no feature columns; name numeric or categorical columns (or write numeric: {REST})")
        return self

    def table_columns(self) -> TableColumns:
        return TableColumns(
            label=self.label, sensitive=self.sensitive, numeric=self.numeric, categorical=self.categorical
        )


class DataConfig(_Strict):
    source: DataSource = Field(
        default=DataSource.MNIST5K,
        description="the pool: built in, mnist5k (5,000 MNIST), digits (sklearn 8x8), or the tables cps, "
                    "breast-cancer and wine; from path, npz, csv, adult or cifar10; arrays: passed in from Python",
    )
    path: Path | None = Field(
        default=None,
        description="the .npz or .csv file, the folder of the UCI Adult files, or cifar-10-batches-bin",
    )
    columns: ColumnsConfig | None = Field(
        default=None,
        description="tables: column roles (needed for csv; cps, adult, breast-cancer and wine have defaults)",
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
            raise ValueError("source 'csv' needs columns (label, numeric, categorical; sensitive for task attribute)")
        if not self.source.is_tabular and self.columns is not None:
            tables = ", ".join(source.value for source in DataSource if source.is_tabular)
            raise ValueError(f"columns are only for tables ({tables}), not '{name}'")
        return self

    def table_columns(self) -> TableColumns | None:
        """The column roles: the config's, or the built-in table's defaults (None for images)."""
        if self.columns is not None:
            return self.columns.table_columns()
        return DEFAULT_ROLES.get(self.source)


class DesignConfig(_Strict):
    num_models: Count = Field(
        default=16, ge=4, le=4096,
        description="models trained per condition, even: each pool point is in exactly half of them, chosen at random",
    )
    num_targets: Count = Field(
        default=100, ge=1,
        description="points under attack, drawn from the pool; task untargeted: leave unset (every victim is a target)",
    )

    @field_validator("num_models")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError("must be even (each point is a member of exactly half the models)")
        return value


MAX_REPLICAS = 10_000
MAX_NOISE_VIEWS = 64
# Sizes past these cannot fit any machine's memory; refused in the config rather than failing
# inside torch ("Storage size calculation overflowed") after the run directory is made.
MAX_WIDTH = 65_536
MAX_LAYERS = 64
MAX_BATCH = 1_000_000


class PoisonConfig(_Strict):
    replicas: Count = Field(
        default=8, ge=0, le=MAX_REPLICAS,
        description="mislabeled copies per target (attribute: of each candidate completion); 0 runs the clean "
                    "condition only",
    )
    strategy: MembershipPoisonStrategy = Field(
        default=ExactReplicas(),
        description="what a replica is: exact (identical copies), perturbed (a noisy copy each, needs norm) or "
                    "blended (mixed with a real point of the wrong label); or adaptive (exact copies, a count per "
                    "target chosen on calibration models; see its settings); task membership only",
    )


class ModelConfig(_Strict):
    architecture: Architecture = Field(
        default=Architecture.MLP,
        description="logreg: linear; mlp: ReLU layers; cnn: conv, ReLU, max-pool layers; wrn: Wide-ResNet "
                    "(cnn, wrn: images); own: the model passed to audit_membership from Python (recorded, never "
                    "built from a config file)",
    )
    hidden_sizes: tuple[Count, ...] = Field(
        default=(256,), min_length=1, max_length=MAX_LAYERS, description=f"MLP hidden widths, each at most {MAX_WIDTH:,}",
    )
    channels: tuple[Count, ...] = Field(
        default=(16, 32), min_length=1, max_length=MAX_LAYERS,
        description=f"CNN convolution widths, each at most {MAX_WIDTH:,}",
    )
    depth: Count = Field(default=16, ge=10, le=1000, description="WRN layers, 6n + 4 (10, 16, 22, 28, ...)")
    widen: Count = Field(default=4, ge=1, le=32, description="WRN widen factor k (16k, 32k, 64k channels)")

    @field_validator("hidden_sizes", "channels")
    @classmethod
    def _positive(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(width < 1 for width in value):
            raise ValueError("widths must be positive")
        if any(width > MAX_WIDTH for width in value):
            raise ValueError(f"widths must be at most {MAX_WIDTH:,}")
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
    optimizer: OptimizerName = Field(default=OptimizerName.ADAM, description="sgd (with momentum) or adam")
    learning_rate: Rate = Field(
        default=1e-3, gt=0, le=10, description="the optimizer's step size (with cosine: its value at the first step)"
    )
    momentum: Rate = Field(default=0.9, ge=0, lt=1, description="SGD only")
    weight_decay: Rate = Field(default=0.0, ge=0, description="L2 penalty the optimizer adds to the gradient; 0: none")
    schedule: Schedule = Field(
        default=Schedule.CONSTANT,
        description="constant: learning_rate throughout; cosine: decays it along a half cosine to 0 over all steps",
    )
    epochs: Count = Field(default=20, ge=1, le=100_000, description="passes over each model's training set")
    batch_size: Count = Field(
        default=128, ge=1, le=MAX_BATCH,
        description="at most this many training points per model per step; every model takes the same steps",
    )
    shard_size: Count = Field(
        default=8, ge=1, le=4096, description="models trained together; a finished shard is never retrained"
    )
    augment: Augment = Field(
        default=Augment.NONE,
        description="images only: crop takes a random crop of the image padded 4 pixels (reflected); "
                    "flip-crop mirrors at random first",
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
    :func:`~truthserum.query.views.generate_views` (identity, then nearest pixel shifts, each followed by
    its mirror when ``flip``). Neither means the identity view alone.
    """

    views: tuple[QueryView, ...] | None = Field(
        default=None, min_length=1,
        description="named views, identity first (null when count is given); omitting both views and count means "
                    "the identity view alone",
    )
    count: Count | None = Field(
        default=None, ge=1, le=max_views(flip=True),
        description="instead of views: the first K of identity, 1-pixel shifts, diagonals, 2-pixel shifts, ...",
    )
    flip: Annotated[bool, Strict()] = Field(
        default=False, description="with count: mirrored views too (images whose mirror keeps the label)"
    )
    noise_views: Count = Field(
        default=0, ge=0, le=MAX_NOISE_VIEWS,
        description="more views, after those: the point plus Gaussian noise (any data, tables too); the "
                    "label-only attack counts the right answers over all views",
    )
    noise_scale: Rate | None = Field(
        default=None, gt=0, le=1_000, description="with noise_views: the noise's standard deviation per feature, in the "
                                        "models' input space (tables: standardised columns)",
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
        if self.noise_views and self.noise_scale is None:
            raise ValueError("noise_views needs noise_scale, the noise's standard deviation per feature")
        if self.noise_scale is not None and not self.noise_views:
            raise ValueError("noise_scale goes with noise_views (how many noisy queries per point)")
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
        if not self.noise_views:  # as a config written before noise views existed
            del data["noise_views"], data["noise_scale"]
        return data

    def resolved_views(self) -> tuple[View, ...]:
        """The views to query, identity first, noise views last."""
        noisy = noise_views(self.noise_views, self.noise_scale) if self.noise_views else ()
        if self.count is not None:
            return generate_views(self.count, flip=self.flip) + noisy
        assert self.views is not None  # set by _identity_by_default when count is not
        return tuple(name.view for name in self.views) + noisy


class MetricsConfig(_Strict):
    """Confidence intervals and the privacy lower bounds (definitions in docs/auditing.md)."""

    bootstrap: Count = Field(
        default=1000, ge=0, le=100_000,
        description="bootstrap resamples of the target points (lm: of the canaries) for the intervals; 0: no intervals",
    )
    confidence: Rate = Field(default=0.95, ge=0.5, lt=1, description="of the intervals and the epsilon bounds")
    delta: Rate = Field(
        default=1e-5, ge=0, lt=1,
        description="the delta at which every epsilon lower bound is stated; the Gaussian-DP bounds need it above 0",
    )
