"""The untargeted task's own stages: the pool split between victims and the adversary, one set of
models per adversary strategy (the clean share first), membership inference on every victim
point. Definitions are in :mod:`truthserum.poison.adversary` and docs/attacks.md.

Files: ``design.npz`` (keep over the victims, the victims' and the adversary's pool
indices), ``signals-<strategy>.npz`` (the victims' signals, the input format of
``truthserum attack``), ``scores-<strategy>.npz``, ``results.json`` and ``roc.png``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from truthserum import seeding
from truthserum.attacks import AttackInputs, get_attack
from truthserum.train.executors import ShardBackend
from truthserum.config import RunConfig
from truthserum.design import make_keep_matrix
from truthserum.errors import ConfigError, DataError
from truthserum.metrics.accuracy import accuracy
from truthserum.metrics.roc import RocCurve
from truthserum.metrics.precision import precision_at_recall
from truthserum.report.plots import plot_roc
from truthserum.data.datasets import Dataset
from truthserum.store.rundir import RunDirectory, write_npz
from truthserum.tasks.results import RunResults
from truthserum.tasks.skeleton import RunContext, TaskOutput, execute
from truthserum.tasks.stages import (
    Log, PoolInputs, attack_metrics, bootstrap_rng, check_attacks_can_run, load_stage, log_to_stderr,
)
from truthserum.train.shard import TrainingJob
from truthserum.poison.adversary import AdversaryStrategy, PoolSplit, adversary_share, split_pool

def untargeted_attacks(config: RunConfig) -> tuple[str, ...]:
    """The configured attacks that apply when every victim point is a target.

    Raises:
        ConfigError: only RMIA attacks were asked for.
    """
    # RMIA compares each target with population points that are not targets; here every victim
    # point is a target, and the adversary's points are in every model, so there is no population.
    chosen = tuple(name for name in config.attacks if not get_attack(name).needs_population)
    if not chosen:
        raise ConfigError(
            "task 'untargeted' attacks every victim point, which leaves RMIA no population points; "
            "list a LiRA, global-threshold or label-only attack"
        )
    return chosen


def draw_split(config: RunConfig, num_points: int) -> tuple[PoolSplit, np.ndarray]:
    """The victims/adversary split and the keep matrix over the victims, drawn from the seed.

    Raises:
        DataError: the adversary's fraction leaves no victims, or too few for the models.
    """
    try:
        split = split_pool(num_points=num_points, adversary_fraction=config.untargeted.adversary_fraction,
                           rng=seeding.rng(config.seed, "split"))
    except ValueError as exc:
        raise DataError(f"untargeted.adversary_fraction: {exc}") from None
    num_models, victims = config.design.num_models, split.victims.size
    keep = make_keep_matrix(num_models=num_models, num_points=victims, rng=seeding.rng(config.seed, "design"))
    members = keep.sum(axis=1)
    if members.min() == 0 or members.max() == victims:
        raise DataError(f"the victims hold {victims} points, too few for {num_models} models")
    return split, keep


def stage_split(run_dir: RunDirectory, config: RunConfig, num_points: int, log: Log) -> tuple[PoolSplit, np.ndarray]:
    """:func:`draw_split`, stored in design.npz (and read back from it)."""
    path = run_dir.file("design.npz")
    split, keep = draw_split(config, num_points)
    victims = split.victims.size
    shapes = {"keep": (config.design.num_models, victims), "victims": (victims,), "adversary": (split.adversary.size,)}
    stored = load_stage(path, shapes, log)
    if stored is not None:
        return PoolSplit(victims=stored["victims"], adversary=stored["adversary"]), stored["keep"]
    write_npz(path, {"keep": keep, "victims": split.victims, "adversary": split.adversary})
    return split, keep


@dataclass(frozen=True)
class UntargetedRunner(PoolInputs):
    """Untargeted poisoning: the adversary's share of the pool, clean then each strategy."""

    def prepare(self, config: RunConfig, *, device, backend) -> Dataset:
        attacks = untargeted_attacks(config)  # refuse a config with only RMIA attacks before anything is written
        pool = super().prepare(config, device=device, backend=backend)
        split, keep = draw_split(config, pool.num_points)  # a split too small for the models, too
        check_attacks_can_run(config, keep=keep, targets=np.arange(split.victims.size), labels=pool.y[split.victims],
                              num_classes=pool.num_classes, attacks=attacks)
        return pool

    def run(self, run: RunContext, pool: Dataset) -> TaskOutput:
        config, run_dir, log = run.config, run.run_dir, run.log
        attacks = untargeted_attacks(config)
        split, keep = stage_split(run_dir, config, pool.num_points, log)
        victims = pool.subset(split.victims)
        own_x, own_y = pool.x[split.adversary], pool.y[split.adversary]
        log(f"{pool.name}: {victims.num_points} victims' points and {own_y.size} of the adversary "
            f"({config.untargeted.adversary_fraction:.0%}); {config.design.num_models} models, each on about "
            f"{keep.sum(axis=1).mean():.0f} victims' points and the whole adversary share")

        scoring = config.model_copy(update={"attacks": attacks})
        options = scoring.attack_options()
        results_by_condition: dict[str, dict] = {}
        curves: dict[tuple[str, str], RocCurve] = {}
        train_seconds = 0.0
        for strategy in (AdversaryStrategy.CLEAN, *config.untargeted.strategies):
            share_x, share_y = adversary_share(
                x=own_x, y=own_y, num_classes=pool.num_classes, strategy=strategy,
                rng=seeding.rng(config.seed, "adversary", strategy.value),
            )
            job = TrainingJob(
                condition=strategy.value, x=victims.x, y=victims.y, keep=keep, extra_x=share_x, extra_y=share_y,
                queries=victims.x, num_classes=pool.num_classes,
            )
            logits, seconds = run.train(job)
            train_seconds += seconds
            inputs = AttackInputs.from_arrays(
                logits=logits, labels=victims.y, keep=keep, source=f"signals-{strategy.value}", max_abs_logit=None,
            )
            write_npz(run_dir.file(f"signals-{strategy.value}.npz"), {
                "logits": inputs.logits, "labels": inputs.labels, "keep": inputs.keep, "targets": inputs.targets,
            })
            metrics, condition_curves, scores = attack_metrics(scoring, inputs, options, progress=run.progress,
                                                               label=strategy.value)
            for name, attack_scores in scores.items():
                metrics[name]["precision_at_recall"] = precision_at_recall(
                    attack_scores, inputs.members, resamples=config.metrics.bootstrap,
                    confidence=config.metrics.confidence, rng=bootstrap_rng(config.seed, f"precision-{name}"),
                )
            write_npz(run_dir.file(f"scores-{strategy.value}.npz"), {"members": inputs.members, **scores})
            results_by_condition[strategy.value] = {
                "adversary_rows": int(share_y.size),
                "accuracy": accuracy(logits, victims.y, keep),
                "attacks": metrics,
            }
            curves.update({(strategy.value, name): curve for name, curve in condition_curves.items()})

        details = {
            "victims": int(victims.num_points),
            "adversary": int(own_y.size),
            "skipped_attacks": [name for name in config.attacks if name not in attacks],
        }
        return TaskOutput(conditions=results_by_condition, details=details, train_seconds=train_seconds,
                          plot_data=curves)

    def plot(self, run: RunContext, results: RunResults, output: TaskOutput) -> None:
        plot_roc(output.plot_data, run.run_dir.file("roc.png"), title="Membership inference on the victims' points",
                     run_name=run.run_dir.root.name)


def run_untargeted(
    config: RunConfig, out_dir: Path, *, device: str = "cpu", progress: bool = True, log: Log = log_to_stderr,
    backend: ShardBackend | None = None,
) -> RunResults:
    """Run (or resume) the untargeted experiment ``config`` in ``out_dir``."""
    return execute(UntargetedRunner(), config, out_dir, device=device, progress=progress, log=log, backend=backend)
