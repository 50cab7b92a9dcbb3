"""One training shard: the models ``first..last`` of one condition, trained together as one
vectorized ensemble and queried. This is the unit of work every backend runs (in process, or as
a Ray task on another machine) and the unit the run directory stores, so it depends only on
its arguments: the config, the job, which models, and the device.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from truthserum import seeding
from truthserum.config import RunConfig
from truthserum.defense.private import PrivateTraining, train_private_ensemble
from truthserum.query.views import query_logits
from truthserum.train import Ensemble, train_ensemble
from truthserum.train.ensemble import steps_per_epoch

EpochReport = Callable[[int, float], None]  # (epoch, mean training loss) after each epoch


@dataclass(frozen=True)
class TrainingJob:
    """What the models of one condition train on, and what they are queried on.

    Model m trains on the rows of ``x`` where ``keep[m]`` is True plus the rows of ``extra_x``
    (the poisons, or the adversary's share): every one of them, or those where
    ``extra_keep[m]`` is True once a defense has filtered them. With ``private`` set the models
    train with DP-SGD (:mod:`truthserum.defense.private`).
    """

    condition: str
    x: np.ndarray
    y: np.ndarray
    keep: np.ndarray
    extra_x: np.ndarray
    extra_y: np.ndarray
    queries: np.ndarray
    num_classes: int
    extra_keep: np.ndarray | None = None
    private: PrivateTraining | None = None
    query_rows: np.ndarray | None = None  # each query's pool index, fixing its noise views (None: its position)

    def model_rows(self, model: int) -> np.ndarray:
        """The rows model ``model`` trains on, in order, as indices into the pool's rows followed
        by the extra rows (see :func:`shard_training_set`)."""
        return np.r_[np.nonzero(self.keep[model])[0], self.x.shape[0] + self.extra_rows(model)].astype(np.int64)

    def extra_rows(self, model: int) -> np.ndarray:
        """The extra rows model ``model`` trains on (indices into ``extra_x``)."""
        if self.extra_keep is None:
            return np.arange(self.extra_y.shape[0])
        return np.nonzero(self.extra_keep[model])[0]

    def training_set_sizes(self) -> np.ndarray:
        """``(M,)`` how many rows each model trains on."""
        extra = (np.full(self.keep.shape[0], self.extra_y.shape[0]) if self.extra_keep is None
                 else self.extra_keep.sum(axis=1))
        return self.keep.sum(axis=1) + extra

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def steps_per_epoch(self, batch_size: int) -> int:
        """Optimiser steps per epoch for every model of the job, set by its largest training
        set, so that a model trains the same way whichever shard it is in."""
        return steps_per_epoch(int(self.training_set_sizes().max()), batch_size)


def shard_shapes(config: RunConfig, job: TrainingJob, models: range) -> dict[str, tuple[int, ...]]:
    """The arrays of a finished shard and their shapes (what :func:`train_shard` returns).

    A shard also holds ``loss``, one mean training loss per epoch: ``train.epochs`` values for
    the built-in training, as many as a user's own trainer reports (none for a scikit-learn
    model), so its length is not part of the check."""
    return {
        "logits": (len(models), job.queries.shape[0], len(config.query.resolved_views()), job.num_classes),
        "models": (len(models),), "train_seconds": (),
    }


ShardTrainer = Callable[[RunConfig, TrainingJob, range, torch.device, EpochReport | None], dict[str, np.ndarray]]
"""Trains the models of one shard and queries them: :func:`train_shard` for the built-in
architectures, or a user's own model (:mod:`truthserum.train.own`)."""


def model_seed(config: RunConfig, model: int) -> int:
    """The torch seed of model ``model``'s initialisation."""
    return seeding.int_seed(config.seed, "init", model)


def shard_training_set(job: TrainingJob, models: range) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Every row any model of the shard trains on (the pool, then the extra rows) and, per model,
    the rows it trains on: its members under the keep matrix, then its extra rows."""
    extra = job.extra_y.shape[0]
    x = np.concatenate([job.x, job.extra_x]) if extra else job.x
    y = np.concatenate([job.y, job.extra_y]) if extra else job.y
    return x, y, [job.model_rows(m) for m in models]


def train_shard(
    config: RunConfig, job: TrainingJob, models: range, device: torch.device,
    on_epoch: EpochReport | None = None,
) -> dict[str, np.ndarray]:
    """Train models ``models`` of ``job`` (the config's architecture) together and query them.

    Every model's initialisation and data order come from (seed, model index) alone, so a
    model's numbers do not depend on which other models share its shard or on which backend
    trains it.

    Returns:
        ``logits`` (models, queries, views, classes), ``models``, per-epoch ``loss`` and
        ``train_seconds``: the arrays of the shard's file.
    """
    started = time.perf_counter()

    def make_model() -> torch.nn.Module:
        return config.model.build(feature_shape=job.feature_shape, num_classes=job.num_classes)

    ensemble = Ensemble.initialise(make_model, [model_seed(config, m) for m in models], device)
    return train_stacked_shard(config, job, models, ensemble, device, on_epoch, started=started)


def train_stacked_shard(
    config: RunConfig, job: TrainingJob, models: range, ensemble: Ensemble, device: torch.device,
    on_epoch: EpochReport | None, *, started: float,
) -> dict[str, np.ndarray]:
    """Train an initialised ensemble of the shard's models and query it (see :func:`train_shard`)."""
    x, y, train_indices = shard_training_set(job, models)
    losses: list[float] = []

    def record(epoch: int, loss: float) -> None:
        losses.append(loss)
        if on_epoch is not None:
            on_epoch(epoch, loss)

    x_device, y_device = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    steps = job.steps_per_epoch(config.train.batch_size)
    if job.private is not None:
        train_private_ensemble(
            ensemble, x=x_device, y=y_device, train_indices=train_indices,
            sample_rngs=[seeding.rng(config.seed, "dp-sample", m) for m in models],
            noise_seeds=[seeding.int_seed(config.seed, "dp-noise", m) for m in models],
            settings=config.train.settings(), private=job.private, steps=steps, on_epoch=record,
        )
    else:
        train_ensemble(
            ensemble, x=x_device, y=y_device, train_indices=train_indices,
            order_rngs=[seeding.rng(config.seed, "order", m) for m in models],
            augment_rngs=[seeding.rng(config.seed, "augment", m) for m in models],
            settings=config.train.settings(), on_epoch=record, steps=steps,
        )
    logits = query_logits(ensemble, torch.from_numpy(job.queries).to(device), config.query.resolved_views(),
                          rows=job.query_rows)
    return {
        "logits": logits,
        "models": np.array(list(models), dtype=np.int64),
        "loss": np.array(losses, dtype=np.float64),
        "train_seconds": np.float64(time.perf_counter() - started),
    }
