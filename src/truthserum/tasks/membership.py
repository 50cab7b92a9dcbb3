"""The membership task's own stages (the runner they go through is
:mod:`truthserum.tasks.skeleton`; the stages every task shares are in :mod:`truthserum.tasks.stages`).

Stages and the files that join them (see :mod:`truthserum.store.rundir`): data -> design.npz ->
poisons.npz -> shards -> signals-<condition>.npz and -logits.npy -> scores-<condition>.npz -> results.json and
roc.png. Each stage reads what the previous one wrote; a finished training shard is never
trained again. Both conditions share the keep matrix, the targets and each model's
initialisation, so their difference is the poisons alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from truthserum import seeding
from truthserum.attacks import AttackInputs, signals_logits_name
from truthserum.train.executors import ShardBackend
from truthserum.config import RunConfig, Task
from truthserum.data.datasets import Dataset
from truthserum.design import Design
from truthserum.errors import ConfigError
from truthserum.metrics.accuracy import accuracy, poison_fit
from truthserum.metrics.guidance import (
    ModelFacts, RunSettings, guidance_for_conditions, guidance_warning, larger_model,
)
from truthserum.metrics.roc import RocCurve
from truthserum.config.defense import DefenseKind, StrategyKind, strategy_name
from truthserum.poison.evasive import strategy_poisons
from truthserum.poison.label_flip import PoisonSet, make_label_flip_poisons, replicate_poisons
from truthserum.report.plots import plot_roc
from truthserum.store.logits import LogitStore
from truthserum.store.rundir import RunDirectory, write_npz
from truthserum.train.shard import TrainingJob
from truthserum.tasks.adaptive import stage_adaptive_budgets
from truthserum.tasks.defended import DefendedConditions, check_defenses_fit_model, check_filters
from truthserum.tasks.results import RunResults
from truthserum.tasks.skeleton import RunContext, TaskOutput, execute
from truthserum.tasks.stages import (
    Log, PoolInputs, attack_metrics, load_stage, log_to_stderr, poison_fit_warning, poison_share_warning,
    check_attacks_can_run, draw_design, stage_design,
)


@dataclass(frozen=True)
class Condition:
    """One training condition; ``replicas`` poisons per target (0 is the clean baseline), or
    with ``adaptive`` a count per target chosen on calibration models (:mod:`truthserum.tasks.adaptive`)."""

    name: str
    replicas: int
    adaptive: bool = False


ADAPTIVE = Condition("adaptive", 0, adaptive=True)


def condition_for(config: RunConfig, replicas: int) -> Condition:
    """The condition with ``replicas`` poisons per target. The budgets of a plain run keep
    their names ("clean", "poisoned"), so a sweep in the same directory reuses their models."""
    if replicas == 0:
        return Condition("clean", 0)
    if replicas == config.poison.replicas:
        return Condition("poisoned", replicas)
    return Condition(f"replicas-{replicas}", replicas)


def conditions_for(config: RunConfig) -> list[Condition]:
    """A plain run: clean, and poisoned when the config has poisons (adaptively poisoned under
    ``poison.strategy: adaptive``)."""
    if config.poison.strategy.kind is StrategyKind.ADAPTIVE:
        return [condition_for(config, 0), ADAPTIVE]
    budgets = [0] + ([config.poison.replicas] if config.poison.replicas > 0 else [])
    return [condition_for(config, replicas) for replicas in budgets]


def adaptive_cap(config: RunConfig) -> int:
    """The most poisons an adaptive budget may place: ``max_poisons``, else the fixed budget's."""
    strategy = config.poison.strategy
    return strategy.max_poisons if strategy.max_poisons is not None else (
        config.poison.replicas * config.design.num_targets)


def stage_poisons(
    run_dir: RunDirectory, config: RunConfig, pool: Dataset, design: Design, log: Log
) -> PoisonSet:
    path = run_dir.file("poisons.npz")
    total = config.design.num_targets * config.poison.replicas
    shapes = {
        "x": (total, *pool.feature_shape), "y": (total,), "source": (total,),
        "target_labels": (config.design.num_targets,), "replicas": (),
    }
    stored = load_stage(path, shapes, log)
    if stored is not None:
        return PoisonSet(
            x=stored["x"], y=stored["y"], source=stored["source"],
            target_labels=stored["target_labels"], replicas=int(stored["replicas"]),
        )
    poisons = make_label_flip_poisons(
        x=pool.x, y=pool.y, targets=design.targets, replicas=config.poison.replicas,
        num_classes=pool.num_classes, rng=seeding.rng(config.seed, "poison"),
    )
    write_npz(path, {
        "x": poisons.x, "y": poisons.y, "source": poisons.source,
        "target_labels": poisons.target_labels, "replicas": np.int64(poisons.replicas),
    })
    return poisons


def membership_job(pool: Dataset, design: Design, poisons: PoisonSet, condition: Condition) -> TrainingJob:
    """Targeted membership: the pool under the keep matrix, the condition's poisons, queried on the pool."""
    return TrainingJob(
        condition=condition.name, x=pool.x, y=pool.y, keep=design.keep,
        extra_x=poisons.x, extra_y=poisons.y, queries=pool.x, num_classes=pool.num_classes,
    )


def _condition_results(
    run_dir: RunDirectory, config: RunConfig, condition: Condition, logits: LogitStore,
    pool: Dataset, design: Design, poisons: PoisonSet, progress: bool,
) -> tuple[dict, dict]:
    """Attack one condition's signals, a chunk of points at a time; returns its results entry
    and its ROC curves."""
    inputs = AttackInputs.from_arrays(
        logits=logits, labels=pool.y, keep=design.keep, targets=design.targets,
        source=f"signals-{condition.name}", max_abs_logit=None,
    )
    write_npz(run_dir.file(f"signals-{condition.name}.npz"), {
        "labels": inputs.labels, "keep": inputs.keep, "targets": inputs.targets,
    })
    attacks, curves, _ = attack_metrics(
        config, inputs, config.attack_options(), scores_file=run_dir.file(f"scores-{condition.name}.npz"),
        progress=progress, label=condition.name,
    )
    members_per_model = float(design.keep.sum(axis=1).mean())
    poisoned = np.isin(design.targets, poisons.source)  # an adaptive budget may leave a target unpoisoned
    entry = {
        "replicas": poisons.total / len(design.targets) if condition.adaptive else condition.replicas,
        **({"adaptive": True} if condition.adaptive else {}),  # replicas is then a mean, set by a cap
        "poison_fraction": poisons.total / (poisons.total + members_per_model),
        "poison_fit": (poison_fit(logits, design.keep, design.targets[poisoned], poisons.target_labels[poisoned])
                       if poisons.total else None),
        "accuracy": accuracy(logits, pool.y, design.keep),
        "attacks": attacks,
    }
    return entry, curves


@dataclass(frozen=True)
class MembershipRunner(PoolInputs):
    """Targeted membership inference: the same keep matrix and targets trained under each
    condition (clean and poisoned, or every budget of a replica sweep)."""

    conditions: tuple[Condition, ...] | None = None
    roc_file: str | None = "roc.png"

    def prepare(self, config: RunConfig, *, device, backend) -> Dataset:
        pool = super().prepare(config, device=device, backend=backend)
        check_defenses_fit_model(config, pool, (config.defense,))
        check_filters(config, pool, (config.defense,), (config.poison.strategy,), config.poison.replicas)
        if config.defense.kind is DefenseKind.NONE:  # a defense changes who is a member; it is not foreseen
            design = draw_design(config, pool)
            check_attacks_can_run(config, keep=design.keep, targets=design.targets, labels=pool.y,
                                  num_classes=pool.num_classes)
        return pool

    def run(self, run: RunContext, pool: Dataset) -> TaskOutput:
        config, run_dir, log = run.config, run.run_dir, run.log
        design = stage_design(run_dir, config, pool, log)
        poisons = stage_poisons(run_dir, config, pool, design, log)
        members_per_model = float(design.keep.sum(axis=1).mean())
        fraction = poisons.total / (poisons.total + members_per_model)
        chosen = list(self.conditions or conditions_for(config))
        log(f"{pool.name}: {pool.num_points} pool points, {pool.num_classes} classes; "
            f"{config.design.num_models} models with about {members_per_model:.0f} members each; "
            f"{len(design.targets)} targets")
        # before any model under attack trains: the calibration reads none of them
        adaptive = (stage_adaptive_budgets(run, config.poison.strategy, pool, design.targets, poisons.target_labels,
                                           adaptive_cap(config), condition=ADAPTIVE.name)
                    if any(condition.adaptive for condition in chosen) else None)
        condition_poisons = {condition.name: replicate_poisons(
            x=pool.x, targets=design.targets, target_labels=poisons.target_labels, replicas=adaptive.counts,
        ) if condition.adaptive else strategy_poisons(
            config.poison.strategy, x=pool.x, y=pool.y, targets=design.targets, target_labels=poisons.target_labels,
            replicas=condition.replicas, rng=seeding.rng(config.seed, "poison", strategy_name(config.poison.strategy)),
        ) for condition in chosen}
        for condition in chosen:
            total = condition_poisons[condition.name].total
            if not total:
                continue
            share = total / (total + members_per_model)
            counts = (f"{total / len(design.targets):.2f} replicas per target on average" if condition.adaptive else
                      f"{len(design.targets)} targets x {condition.replicas} "
                      f"{'replica' if condition.replicas == 1 else 'replicas'}")
            log(f"{condition.name}: {total} poisons ({counts}), {share:.1%} of a model's training set")
            run.warn(poison_share_warning(condition.name, share))

        results_by_condition: dict[str, dict] = {}
        curves: dict[tuple[str, str], RocCurve] = {}
        train_seconds = 0.0
        defended = DefendedConditions.plan(run, config.defense, pool, design, condition_poisons,
                                           exact=config.poison.strategy.kind in (StrategyKind.EXACT,
                                                                                 StrategyKind.ADAPTIVE))
        for condition in chosen:
            if defended is None:
                logits, seconds = run.train(membership_job(pool, design, condition_poisons[condition.name], condition),
                                            logits_file=run_dir.file(signals_logits_name(condition.name)))
                entry, condition_curves = _condition_results(
                    run_dir, config, condition, logits, pool, design, condition_poisons[condition.name], run.progress
                )
            else:
                entry, condition_curves, seconds = defended.train_and_measure(run, condition.name)
            train_seconds += seconds
            results_by_condition[condition.name] = entry
            curves.update({(condition.name, name): curve for name, curve in condition_curves.items()})
            run.warn(poison_fit_warning(condition.name, entry["poison_fit"]))
        fit = results_by_condition.get("poisoned", {}).get("poison_fit")
        poison = {
            "targets": int(len(design.targets)), "replicas": int(config.poison.replicas),
            "total": int(poisons.total), "fraction": fraction, "fit": fit,
        }
        if adaptive is not None:
            poison["adaptive"] = adaptive.to_json(goal=config.poison.strategy.goal.value,
                                                  fixed_replicas=config.poison.replicas)
            poison["adaptive"]["fit"] = results_by_condition[ADAPTIVE.name]["poison_fit"]
            poison["adaptive"]["fraction"] = results_by_condition[ADAPTIVE.name]["poison_fraction"]
        details: dict = {"poison": poison}
        facts = self.model_description(config, pool)
        # behind a defense, a small amplification is what is measured, not a set-up to fix
        guidance = None if config.defense.kind is not DefenseKind.NONE else guidance_for_conditions(
            results_by_condition, RunSettings(
                model=facts, epochs=config.train.epochs if facts.training_in_config else None,
                weight_decay=config.train.weight_decay if facts.training_in_config else None,
                members_per_model=members_per_model, num_targets=int(len(design.targets)),
                num_models=config.design.num_models,
            ))
        if guidance is not None:
            details["guidance"] = guidance.to_json()
            run.warn(guidance_warning(guidance))
        return TaskOutput(conditions=results_by_condition, details=details,
                          train_seconds=train_seconds, plot_data=curves)

    def model_description(self, config: RunConfig, pool: Dataset) -> ModelFacts:
        """What the guidance on a small amplification needs to know of the models: their
        trainable parameters and the config changes that enlarge them. A runner of the user's
        own model or trainer overrides this (parameters None where it cannot count them;
        ``model_in_config`` / ``training_in_config`` False so the changes read "your model" /
        "your trainer")."""
        model = config.model
        try:
            built = model.build(feature_shape=pool.feature_shape, num_classes=pool.num_classes)
        except ConfigError:  # not one the config builds (the user's own): nothing to count or enlarge
            return ModelFacts(name=model.architecture.value, parameters=None, model_in_config=False)
        sizes = {"mlp": f" {list(model.hidden_sizes)}", "cnn": f" {list(model.channels)}",
                 "wrn": f"-{model.depth}-{model.widen}"}
        return ModelFacts(
            name=model.architecture.value + sizes.get(model.architecture.value, ""),
            parameters=sum(parameter.numel() for parameter in built.parameters() if parameter.requires_grad),
            larger=larger_model(model.architecture.value, hidden_sizes=model.hidden_sizes,
                                channels=model.channels, widen=model.widen),
        )

    def plot(self, run: RunContext, results: RunResults, output: TaskOutput) -> None:
        if self.roc_file is not None:
            plot_roc(output.plot_data, run.run_dir.file(self.roc_file), run_name=run.run_dir.root.name)


def run_experiment(
    config: RunConfig, out_dir: Path, *, device: str = "cpu", progress: bool = True, log: Log = log_to_stderr,
    backend: ShardBackend | None = None,
    conditions: list[Condition] | None = None, results_file: str = "results.json",
    roc_file: str | None = "roc.png",
) -> RunResults:
    """Run (or resume) the membership experiment ``config`` in ``out_dir``.

    ``backend`` trains the shards (default: in this process; see :mod:`truthserum.train.executors`).
    ``conditions`` defaults to clean and poisoned; a replica sweep passes one per budget. All
    of them share the keep matrix, the targets and each target's wrong label.

    Raises:
        TruthserumError: a bad config, data or run directory (found before any training starts),
            or a training that diverged.
    """
    if config.task is not Task.MEMBERSHIP:
        raise ConfigError(f"run_experiment runs task 'membership', not '{config.task.value}'; use run_task")
    runner = MembershipRunner(conditions=None if conditions is None else tuple(conditions), roc_file=roc_file)
    return execute(runner, config, out_dir, device=device, progress=progress, log=log, backend=backend,
                   results_file=results_file)
