"""Audit your own model: the membership task on the user's arrays, with the user's own model.

:func:`audit_membership` takes the user's objects (a :class:`~truthserum.data.datasets.Dataset`
made with ``Dataset.from_arrays``, and a model: a built-in architecture, a factory returning an
``nn.Module``, a scikit-learn classifier or any :class:`~truthserum.train.trainers.ModelTrainer`)
and runs them through the same stages as ``truthserum run``: design, poisons, training, queries,
attacks, metrics, in a run directory that resumes. Its ``config.yaml`` records
``data.source: arrays`` and ``model.architecture: own``; what the data and the model were is
recorded beside it (``pool.json``, ``model.json``) and checked when the run resumes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from truthserum.config import RunConfig, parse_config
from truthserum.config.sections import MetricsConfig, ModelConfig, QueryConfig, TrainConfig
from truthserum.data.datasets import Dataset
from truthserum.errors import ConfigError, DataError, RunDirError
from truthserum.metrics.guidance import ModelFacts
from truthserum.query.views import check_views_fit_data
from truthserum.store.rundir import RunDirectory, write_json
from truthserum.tasks.membership import MembershipRunner
from truthserum.tasks.results import RunResults
from truthserum.tasks.skeleton import RunContext, TaskOutput, execute
from truthserum.tasks.stages import Log, log_to_stderr, resume_pool
from truthserum.train.augment import check_augment_fits_data
from truthserum.train.executors import LocalBackend, ShardBackend
from truthserum.train.own import ModuleTrainer, TrainingPath
from truthserum.train.trainers import ModelTrainer, ProtocolShardTrainer, as_trainer, describe_trainer

MIN_POINTS = 4  # fewer leave nothing to split into members and non-members
MODEL_FILE = "model.json"

ModelSpec = ModelConfig | Callable[[], nn.Module] | ModelTrainer | Any
"""A built-in architecture (:class:`ModelConfig`), a factory returning an ``nn.Module``, a
:class:`ModelTrainer`, or a scikit-learn classifier."""


@dataclass(frozen=True)
class OwnModel:
    """The model of an audit, resolved from what the user passed: ``shard_trainer`` trains a
    shard of it (None: the config's built-in architecture), ``record`` says what it is."""

    shard_trainer: ModuleTrainer | ProtocolShardTrainer | None
    record: dict = field(default_factory=dict)

    @property
    def is_builtin(self) -> bool:
        return self.shard_trainer is None


def resolve_model(model: ModelSpec) -> OwnModel:
    """Tell apart the forms ``model`` may take.

    Raises:
        ConfigError: a module instead of a factory, or anything that is no model.
    """
    if isinstance(model, ModelConfig):
        return OwnModel(None, {"kind": "built-in", "architecture": model.architecture.value})
    if isinstance(model, nn.Module):
        raise ConfigError(
            f"model: pass a factory that builds the module (e.g. lambda: {type(model).__name__}(...)), not a "
            "module: the audit trains many fresh models"
        )
    trainer = as_trainer(model)
    if trainer is not None:
        return OwnModel(ProtocolShardTrainer(trainer), describe_trainer(trainer))
    if callable(model):
        return OwnModel(ModuleTrainer(model))
    raise ConfigError(
        f"model: got {type(model).__name__}; pass a ModelConfig, a factory returning a torch.nn.Module, a "
        "scikit-learn classifier or an object with fit_predict (truthserum.ModelTrainer)"
    )


@dataclass(frozen=True)
class OwnModelRunner(MembershipRunner):
    """The membership task on a pool passed in memory, with the user's own model."""

    pool: Dataset | None = None
    model: OwnModel = OwnModel(None)

    def prepare(self, config: RunConfig, *, device: torch.device, backend: ShardBackend) -> Dataset:
        pool = self.pool
        assert pool is not None
        if pool.num_points < MIN_POINTS:
            raise DataError(f"data: {pool.num_points} points; an audit needs at least {MIN_POINTS}")
        if config.design.num_targets > pool.num_points:
            raise DataError(f"data: {pool.num_points} points, too few for num_targets = {config.design.num_targets}")
        check_views_fit_data(config.query.resolved_views(), is_image=pool.is_image, source=config.data.source)
        check_augment_fits_data(config.train.augment, pool.feature_shape)
        trainer = self.model.shard_trainer
        if trainer is None:
            config.model.build(feature_shape=pool.feature_shape, num_classes=pool.num_classes)
        elif isinstance(trainer, ModuleTrainer):
            self.model.record.update(trainer.describe(config, pool.x[:8], pool.num_classes))
        elif any(not view.is_identity for view in config.query.resolved_views()):
            raise ConfigError("query: a trainer is queried on the points as given; views other than identity "
                              "need an nn.Module")
        return pool

    def resume(self, run_dir: RunDirectory, pool: Dataset) -> Dataset:
        pool = resume_pool(run_dir, pool)
        if not self.model.is_builtin:
            self._check_model_unchanged(run_dir)
        return pool

    def _check_model_unchanged(self, run_dir: RunDirectory) -> None:
        """Record the model in ``model.json``, or check it against the one whose models are
        already trained there. Until one is, the model may change (a first attempt that failed
        leaves the design and the poisons, which do not depend on it)."""
        path = run_dir.file(MODEL_FILE)
        record = self.model.record | {"fingerprint": {key: value for key, value in self.model.record.items()
                                                      if key.endswith("sha256")}}
        if not any((run_dir.root / "shards").rglob("*.npz")):
            write_json(path, record)
            return
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            stored = None
        if not isinstance(stored, dict) or "fingerprint" not in stored:
            raise RunDirError(f"{path}: missing or damaged, so the model the trained shards came from cannot be "
                              "checked; use another out_dir")
        if stored["fingerprint"] != record["fingerprint"]:
            raise RunDirError(
                f"{run_dir.root}: the model differs from the one its models were trained with ({stored.get('class')} "
                f"then, {record.get('class')} now, or the same class changed); use another out_dir"
            )

    def run(self, run: RunContext, pool: Dataset) -> TaskOutput:
        output = super().run(run, pool)
        output.details["training"] = self._training_record(run.run_dir)
        trainer = self.model.shard_trainer
        if isinstance(trainer, ProtocolShardTrainer) and trainer.warned_probabilities:
            run.warn("the trainer returned probabilities, not logits; truthserum took their logarithms "
                     "(log-probabilities are logits up to a constant)")
        return output

    def model_description(self, config: RunConfig, pool: Dataset) -> ModelFacts:
        """A module's parameters are counted, and trains under the ``train`` settings; a
        trainer's model is its own business, and so is its training."""
        trainer = self.model.shard_trainer
        if trainer is None:
            return super().model_description(config, pool)
        record = self.model.record
        if isinstance(trainer, ModuleTrainer):
            return ModelFacts(name=f"your {record.get('class', 'module')}", parameters=record.get("parameters"),
                              model_in_config=False)
        return ModelFacts(name=f"your {record.get('class', 'trainer')}", parameters=None, model_in_config=False,
                          training_in_config=False)

    def _training_record(self, run_dir: RunDirectory) -> dict:
        """The model and the path its shards trained on; a resumed run that trained nothing
        now reads the path recorded when they were trained."""
        trainer = self.model.shard_trainer
        if trainer is None:
            path = {"path": TrainingPath.VECTORIZED.value}
        elif isinstance(trainer, ProtocolShardTrainer):
            path = {"path": TrainingPath.TRAINER.value}
        elif trainer.trained:
            # the path is the architecture's (see ModuleTrainer), so "mixed" would be a bug worth seeing
            path = {"path": trainer.path.value if trainer.path is not None else "mixed"}
            path |= {"reason": trainer.reason} if trainer.reason else {}
            write_json(run_dir.file("training.json"), path)
        else:
            try:
                path = json.loads(run_dir.file("training.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                path = {"path": "unknown (every shard was reused)"}
        return {"model": self.model.record} | path


def audit_config(
    *, train: TrainConfig | None, query: QueryConfig | None, metrics: MetricsConfig | None,
    num_models: int, num_targets: int, replicas: int, seed: int, attacks: Sequence[str] | None,
    model_config: ModelConfig | None,
) -> RunConfig:
    """The membership config an audit runs, validated as a config file would be."""
    raw: dict[str, Any] = {
        "task": "membership", "seed": seed, "data": {"source": "arrays"},
        "design": {"num_models": num_models, "num_targets": num_targets},
        "poison": {"replicas": replicas},
        "model": model_config.model_dump(mode="json") if model_config is not None else {"architecture": "own"},
    }
    for key, section in (("train", train), ("query", query), ("metrics", metrics)):
        if section is not None:
            if not isinstance(section, (TrainConfig, QueryConfig, MetricsConfig)):
                raise ConfigError(f"{key}: pass a truthserum {key.capitalize()}Config, got {type(section).__name__}")
            raw[key] = section.model_dump(mode="json")
    if attacks is not None:
        raw["attacks"] = list(attacks)
    return parse_config(raw, source="audit_membership")


def audit_membership(
    *,
    data: Dataset,
    model: ModelSpec,
    out_dir: str | Path,
    train: TrainConfig | None = None,
    num_models: int = 16,
    num_targets: int = 100,
    replicas: int = 8,
    seed: int = 0,
    attacks: Sequence[str] | None = None,
    query: QueryConfig | None = None,
    metrics: MetricsConfig | None = None,
    device: str = "cpu",
    progress: bool = True,
    log: Log = log_to_stderr,
) -> RunResults:
    """Audit ``model`` trained on ``data``: membership inference on ``num_targets`` points,
    clean and with ``replicas`` mislabeled replicas of each target in every training set.

    Args:
        data: the pool, ``Dataset.from_arrays(x=..., y=...)``.
        model: a :class:`ModelConfig` (a built-in architecture); a factory returning a fresh
            ``nn.Module`` (trained under ``train``, vectorized when the modules stack); a
            scikit-learn classifier (cloned and fitted per model); or any object with
            ``fit_predict`` (:class:`~truthserum.train.trainers.ModelTrainer`).
        out_dir: the run directory (created, or resumed).
        train: optimizer, epochs, batches for built-in and ``nn.Module`` models (a trainer
            trains itself: refused with one).
        num_models: models per condition (even; each point is in half of them).
        num_targets: points under attack.
        replicas: poisons per target (0: the clean condition only).
        attacks: attack names (default: every registered attack).
        query, metrics: as the config sections of the same names.
        device: ``cpu``, ``cuda`` or ``auto``.

    Returns:
        The typed results; ``results.details["training"]`` says what the model was and
        whether it trained vectorized, one by one, or through a trainer.

    Raises:
        TruthserumError: bad data, model or settings (before anything is written), or a
            training that diverged.
    """
    if not isinstance(data, Dataset):
        raise DataError(f"data: pass truthserum.Dataset.from_arrays(x=..., y=...), got {type(data).__name__}")
    own = resolve_model(model)
    if isinstance(own.shard_trainer, ProtocolShardTrainer) and train is not None:
        raise ConfigError("train: a trainer trains its models itself; train= is for built-in architectures and "
                          "nn.Module factories")
    config = audit_config(
        train=train, query=query, metrics=metrics, num_models=num_models, num_targets=num_targets,
        replicas=replicas, seed=seed, attacks=attacks,
        model_config=model if isinstance(model, ModelConfig) else None,
    )
    runner = OwnModelRunner(pool=data, model=own)
    backend = LocalBackend() if own.shard_trainer is None else LocalBackend(trainer=own.shard_trainer)
    return execute(runner, config, Path(out_dir), device=device, progress=progress, log=log, backend=backend)
