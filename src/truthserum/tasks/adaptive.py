"""The membership task's adaptive budgets (``poison.strategy: adaptive``): the adversary's own
calibration models, trained before any model under attack, then a replica count per target
(the method is in :mod:`truthserum.poison.adaptive`).

Files: the calibration models are shards of the condition ``calibration`` (trained, reused and
resumed like any other shard, on whichever backend trains the run), queried on the targets
only; ``adaptive-budgets.npz`` holds the chosen counts, the candidate budgets and every
(target, budget) separation, so a resumed run chooses nothing again.

What the calibration reads: the pool, the targets, their wrong labels and the config. It draws
its own keep matrix and its own model seeds from the stream ``calibration`` of the run's seed,
so none of its models is a model under attack, and it runs before those are trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from truthserum import seeding
from truthserum.config import RunConfig
from truthserum.config.defense import AdaptiveReplicas
from truthserum.data.datasets import Dataset
from truthserum.errors import RunDirError
from truthserum.poison.adaptive import CalibrationPlan, allocate_budgets, calibration_plan, separation
from truthserum.poison.label_flip import replicate_poisons
from truthserum.store.rundir import write_npz
from truthserum.tasks.skeleton import RunContext
from truthserum.tasks.stages import load_stage
from truthserum.train.shard import TrainingJob

ADAPTIVE_FILE = "adaptive-budgets.npz"
CALIBRATION = "calibration"  # the condition name of the calibration models' shards


@dataclass(frozen=True)
class AdaptiveBudgets:
    """The replica count chosen for each target, and how.

    Attributes:
        counts: ``(T,)`` replicas per target, aligned with the design's targets.
        budgets: ``(B,)`` the candidate counts.
        separation: ``(T, B)`` each (target, budget)'s separation on the calibration models.
        cap: the most poisons allowed in all.
        calibration_models: how many models chose them.
        calibration_seconds: their training time, earlier runs included.
    """

    counts: np.ndarray
    budgets: np.ndarray
    separation: np.ndarray
    cap: int
    calibration_models: int
    calibration_seconds: float

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def to_json(self, *, goal: str, fixed_replicas: int) -> dict:
        """The ``poison.adaptive`` entry of results.json."""
        values, targets = np.unique(self.counts, return_counts=True)
        return {
            "goal": goal, "budgets": [int(b) for b in self.budgets],
            "targets_per_budget": {str(int(v)): int(n) for v, n in zip(values, targets, strict=True)},
            "mean_replicas": float(self.counts.mean()), "total": self.total, "cap": int(self.cap),
            "fixed_total": int(fixed_replicas * self.counts.size),
            "calibration_models": int(self.calibration_models),
            "calibration_seconds": float(self.calibration_seconds),
        }


def calibration_config(config: RunConfig, strategy: AdaptiveReplicas) -> RunConfig:
    """The config the calibration models train under: the run's model and training, their own
    number of models, and a seed of their own, so no calibration model shares a model under
    attack's initialisation or data order."""
    seed = seeding.int_seed(config.seed, CALIBRATION) % 2**31
    design = config.design.model_copy(update={"num_models": strategy.calibration_models})
    return config.model_copy(update={"seed": seed, "design": design})


def calibration_job(config: RunConfig, strategy: AdaptiveReplicas, pool: Dataset, targets: np.ndarray,
                    target_labels: np.ndarray) -> tuple[TrainingJob, CalibrationPlan]:
    """The calibration models' training job and their plan (which budget, and whether IN).

    Every model trains on a random half of the pool (its own keep matrix), then on the targets
    as :func:`~truthserum.poison.adaptive.calibration_plan` says, plus the first ``budget``
    replicas of each target out of ``max(budgets)``; they are queried on the targets."""
    rng = seeding.rng(config.seed, CALIBRATION, "design")
    budgets = np.asarray(strategy.budgets)
    plan = calibration_plan(num_models=strategy.calibration_models, num_targets=targets.size,
                            num_budgets=budgets.size, rng=rng)
    keep = rng.random((strategy.calibration_models, pool.num_points)) < 0.5
    keep[:, targets] = plan.member
    poisons = replicate_poisons(x=pool.x, targets=targets, target_labels=target_labels, replicas=int(budgets.max()))
    job = TrainingJob(condition=CALIBRATION, x=pool.x, y=pool.y, keep=keep, extra_x=poisons.x, extra_y=poisons.y,
                      queries=pool.x[targets], query_rows=targets, num_classes=pool.num_classes,
                      extra_keep=plan.replica_mask(budgets))
    return job, plan


def stage_adaptive_budgets(run: RunContext, strategy: AdaptiveReplicas, pool: Dataset, targets: np.ndarray,
                           target_labels: np.ndarray, cap: int, *, condition: str) -> AdaptiveBudgets:
    """Train (or reuse) the calibration models and choose every target's replica count, or read
    the counts an earlier run of this config chose.

    Raises:
        RunDirError: the counts are lost (``adaptive-budgets.npz`` missing or damaged) while
            models of ``condition`` trained on them are kept: counts chosen again by models
            trained again (on a GPU, or another machine) need not be the same, and the results
            would describe poisons those models never saw.
    """
    budgets = np.asarray(strategy.budgets, dtype=np.int64)
    path = run.run_dir.file(ADAPTIVE_FILE)
    shapes = {"counts": (targets.size,), "budgets": budgets.shape, "separation": (targets.size, budgets.size),
              "cap": (), "calibration_seconds": ()}
    stored = load_stage(path, shapes, run.log)
    if stored is not None and np.array_equal(stored["budgets"], budgets) and int(stored["cap"]) == cap:
        return AdaptiveBudgets(counts=stored["counts"], budgets=budgets, separation=stored["separation"], cap=cap,
                               calibration_models=strategy.calibration_models,
                               calibration_seconds=float(stored["calibration_seconds"]))
    trained = sorted(run.run_dir.shard_file(condition, 0, 0).parent.glob("models-*.npz"))
    if trained:
        raise RunDirError(f"{path}: missing or damaged, but {len(trained)} shards of '{condition}' were trained on the "
                          f"counts it held; delete {trained[0].parent} to choose the counts and train them again")
    config = calibration_config(run.config, strategy)
    job, plan = calibration_job(config, strategy, pool, targets, target_labels)
    run.log(f"{CALIBRATION}: {strategy.calibration_models} models choose each target's replicas among "
            f"{list(strategy.budgets)} ({strategy.goal.value}), at most {cap} poisons in all")
    logits, seconds = run.train(job, config=config)
    gains = separation(np.asarray(logits), pool.y[targets], plan, budgets.size, strategy.goal)
    counts = allocate_budgets(gains, budgets, cap)
    write_npz(path, {"counts": counts, "budgets": budgets, "separation": gains, "cap": np.int64(cap),
                     "calibration_seconds": np.float64(seconds)})
    chosen = AdaptiveBudgets(counts=counts, budgets=budgets, separation=gains, cap=cap,
                             calibration_models=strategy.calibration_models, calibration_seconds=seconds)
    run.log(f"{CALIBRATION}: {chosen.total} poisons in all (mean {counts.mean():.2f} per target; "
            + ", ".join(f"{n} targets x {v}" for v, n in zip(*np.unique(counts, return_counts=True), strict=True))
            + f"), chosen in {seconds:.0f} s of training")
    return chosen
