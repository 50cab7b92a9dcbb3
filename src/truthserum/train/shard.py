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
from truthserum.query.views import query_logits
from truthserum.train import Ensemble, train_ensemble
from truthserum.train.ensemble import steps_per_epoch

EpochReport = Callable[[int, float], None]  # (epoch, mean training loss) after each epoch


@dataclass(frozen=True)
class TrainingJob:
    """What the models of one condition train on, and what they are queried on.

    Model m trains on the rows of ``x`` where ``keep[m]`` is True plus every row of
    ``extra_x`` (the poisons, or the adversary's share): the same for all models.
    """

    condition: str
    x: np.ndarray
    y: np.ndarray
    keep: np.ndarray
    extra_x: np.ndarray
    extra_y: np.ndarray
    queries: np.ndarray
    num_classes: int

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def steps_per_epoch(self, batch_size: int) -> int:
        """Optimiser steps per epoch for every model of the job, set by its largest training
        set, so that a model trains the same way whichever shard it is in."""
        return steps_per_epoch(int(self.keep.sum(axis=1).max()) + self.extra_y.shape[0], batch_size)


def shard_shapes(config: RunConfig, job: TrainingJob, models: range) -> dict[str, tuple[int, ...]]:
    """The arrays of a finished shard and their shapes (what :func:`train_shard` returns)."""
    return {
        "logits": (len(models), job.queries.shape[0], len(config.query.resolved_views()), job.num_classes),
        "models": (len(models),), "loss": (config.train.epochs,), "train_seconds": (),
    }


def train_shard(
    config: RunConfig, job: TrainingJob, models: range, device: torch.device,
    on_epoch: EpochReport | None = None,
) -> dict[str, np.ndarray]:
    """Train models ``models`` of ``job`` together and query them.

    Every model's initialisation and data order come from (seed, model index) alone, so a
    model's numbers do not depend on which other models share its shard or on which backend
    trains it.

    Returns:
        ``logits`` (models, queries, views, classes), ``models``, per-epoch ``loss`` and
        ``train_seconds``: the arrays of the shard's file.
    """
    started = time.perf_counter()
    num_rows, extra = job.x.shape[0], job.extra_y.shape[0]
    x = np.concatenate([job.x, job.extra_x]) if extra else job.x
    y = np.concatenate([job.y, job.extra_y]) if extra else job.y
    extra_rows = np.arange(num_rows, num_rows + extra)
    train_indices = [np.r_[np.nonzero(job.keep[m])[0], extra_rows].astype(np.int64) for m in models]

    def make_model() -> torch.nn.Module:
        return config.model.build(feature_shape=job.feature_shape, num_classes=job.num_classes)

    ensemble = Ensemble.initialise(
        make_model, [seeding.int_seed(config.seed, "init", m) for m in models], device
    )
    losses: list[float] = []

    def record(epoch: int, loss: float) -> None:
        losses.append(loss)
        if on_epoch is not None:
            on_epoch(epoch, loss)

    train_ensemble(
        ensemble, x=torch.from_numpy(x).to(device), y=torch.from_numpy(y).to(device),
        train_indices=train_indices,
        order_rngs=[seeding.rng(config.seed, "order", m) for m in models],
        augment_rngs=[seeding.rng(config.seed, "augment", m) for m in models],
        settings=config.train.settings(), on_epoch=record,
        steps=job.steps_per_epoch(config.train.batch_size),
    )
    logits = query_logits(ensemble, torch.from_numpy(job.queries).to(device), config.query.resolved_views())
    return {
        "logits": logits,
        "models": np.array(list(models), dtype=np.int64),
        "loss": np.array(losses, dtype=np.float64),
        "train_seconds": np.float64(time.perf_counter() - started),
    }
