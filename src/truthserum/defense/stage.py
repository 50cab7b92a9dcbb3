"""The defense stage: a :class:`~truthserum.train.shard.TrainingJob` in, the job the pipeline
actually trains out, for every model of it (clean and poisoned conditions alike, so that the
comparison stays paired).

A filter narrows each model's training set (``keep`` and ``extra_keep``); the membership
design itself is unchanged, so a member target that a filter drops still counts as a member:
the pipeline was handed it. DP-SGD leaves the data alone and sets ``job.private``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from truthserum.config.defense import DefenseKind, DpSgd
from truthserum.defense import filters
from truthserum.defense.private import PrivateTraining
from truthserum.errors import ConfigError
from truthserum.train.ensemble import steps_per_epoch
from truthserum.train.shard import TrainingJob, shard_training_set

MAX_REMOVED = 0.5
"""A filter that takes more than this share of any model's training set is refused before
anything trains: what it measures is then the filter, not the attack."""


def filter_masks(defense, job: TrainingJob, *, losses: np.ndarray | None = None) -> list[np.ndarray]:
    """Per model, the mask over its training rows (in order) of those the filter keeps.

    ``losses`` ``(M, R)``: every model's loss on every row, trained on its whole set (the
    loss filter's first pass)."""
    x, y, rows = shard_training_set(job, range(job.keep.shape[0]))
    kind = defense.kind
    if kind in (DefenseKind.DEDUP_EXACT, DefenseKind.CONFLICTING_LABELS):
        groups = filters.identical_groups(x)
        if kind is DefenseKind.DEDUP_EXACT:
            return [filters.dedup_exact(groups, r) for r in rows]
        return [filters.conflicting_labels(groups, y, r) for r in rows]
    if kind is DefenseKind.NEAR_DUPLICATES:
        graph = filters.neighbour_graph(x, defense.radius)
        return [filters.near_duplicates(graph, r) for r in rows]
    if kind is DefenseKind.LOSS_FILTER:
        if losses is None:
            raise ValueError("the loss filter needs every model's losses from its first pass")
        return [filters.highest_loss(losses[m, r], defense.fraction) for m, r in enumerate(rows)]
    return [np.ones(len(r), dtype=bool) for r in rows]


def filtered_job(job: TrainingJob, masks: list[np.ndarray], *, defense_name: str) -> TrainingJob:
    """``job`` with every model's training set narrowed to ``masks`` (see :func:`filter_masks`).

    Raises:
        ConfigError: the filter would take more than :data:`MAX_REMOVED` of a model's set.
    """
    num_rows = job.x.shape[0]
    keep = np.zeros_like(job.keep)
    extra_keep = np.zeros((job.keep.shape[0], job.extra_y.shape[0]), dtype=bool)
    for model, mask in enumerate(masks):
        model_rows = job.model_rows(model)
        kept = model_rows[mask]
        removed = 1.0 - len(kept) / max(1, len(model_rows))
        if removed > MAX_REMOVED:
            raise ConfigError(
                f"defense {defense_name} would remove {removed:.1%} of model {model}'s training set "
                f"({len(model_rows) - len(kept):,} of {len(model_rows):,} points) in condition {job.condition}; a "
                f"filter that removes most of the data measures nothing (refused past {MAX_REMOVED:.0%}: "
                "loosen its setting)"
            )
        keep[model, kept[kept < num_rows]] = True
        extra_keep[model, kept[kept >= num_rows] - num_rows] = True
    return replace(job, keep=keep, extra_keep=extra_keep)


def example_losses(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``(M, R)`` cross-entropy of every model on every row from its logits ``(M, R, C)``."""
    shifted = logits - logits.max(axis=2, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=2))
    picked = np.take_along_axis(shifted, labels[None, :, None].astype(np.int64), axis=2)[..., 0]
    return (log_norm - picked).astype(np.float64)


def private_job(job: TrainingJob, defense: DpSgd, *, batch_size: int, epochs: int,
                noise_multiplier: float | None = None) -> TrainingJob:
    """``job`` trained with DP-SGD: Poisson sampling at rate ``batch_size / n`` (n the largest
    training set of the job, so every model takes the same number of steps), noise
    ``noise_multiplier`` (by default calibrated by the accountant)."""
    largest = int(job.training_set_sizes().max())
    sample_rate = min(1.0, batch_size / largest)
    if noise_multiplier is None:
        from truthserum.defense.accounting import calibrate_noise  # Opacus, imported when used

        noise_multiplier = calibrate_noise(defense, sample_rate=sample_rate,
                                           steps=epochs * steps_per_epoch(largest, batch_size))
    return replace(job, private=PrivateTraining(
        noise_multiplier=noise_multiplier, clip_norm=defense.clip_norm, sample_rate=sample_rate,
        expected_batch_size=sample_rate * largest,
    ))


def private_steps(job: TrainingJob, *, batch_size: int, epochs: int) -> int:
    return epochs * steps_per_epoch(int(job.training_set_sizes().max()), batch_size)


def survivors(job: TrainingJob, defended: TrainingJob, *, sources: np.ndarray, targets: np.ndarray) -> dict:
    """What the defense left of the poisons (overall, and by whether their target was a member
    of the model) and of the pool's points.

    Args:
        job, defended: the job before and after the defense (same models and rows).
        sources: ``(P,)`` the pool index of the target each extra row poisons.
        targets: the pool indices of the targets.
    """
    extra = defended.extra_keep if defended.extra_keep is not None else np.ones(
        (job.keep.shape[0], job.extra_y.shape[0]), dtype=bool)
    members = job.keep[:, sources] if sources.size else np.zeros_like(extra)
    pool_kept = (defended.keep & job.keep).sum() / max(1, job.keep.sum())

    def share(mask: np.ndarray) -> float | None:
        return float(extra[mask].mean()) if mask.any() else None

    return {
        "poisons": int(job.extra_y.shape[0]),
        "poisons_surviving": share(np.ones_like(extra)),
        "poisons_surviving_target_member": share(members),
        "poisons_surviving_target_nonmember": share(~members),
        "pool_points_kept": float(pool_kept),
        "member_targets_kept": float((defended.keep & job.keep)[:, targets].sum() / max(1, job.keep[:, targets].sum())),
    }
