"""Training a membership condition behind a defense: the stage between the poisons and the
shards, shared by the membership task (its ``defense`` section) and the defense matrix.

A condition's job queries the pool and then its own poisons, so that one training gives both
the attack's signals (the pool's rows) and what the defense and the report need of the poisons
(their losses, whether the models fit them).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from truthserum import seeding
from truthserum.attacks import AttackInputs, signals_logits_name
from truthserum.config.defense import DefenseKind, defense_name, strategy_name
from truthserum.data.datasets import Dataset
from truthserum.defense import stage as defense_stage
from truthserum.defense.private import check_private_module
from truthserum.design import Design
from truthserum.metrics.accuracy import accuracy, poison_fit
from truthserum.poison.evasive import strategy_poisons
from truthserum.poison.label_flip import PoisonSet, make_label_flip_poisons, replicate_poisons
from truthserum.store.logits import LogitDtype, LogitStore
from truthserum.store.rundir import commit_temporary, naming_errors, temporary_path, write_npz
from truthserum.tasks.skeleton import RunContext
from truthserum.tasks.stages import attack_metrics, draw_design
from truthserum.train.shard import TrainingJob


def poisoned_job(name: str, pool: Dataset, design: Design, poisons: PoisonSet) -> TrainingJob:
    """The pool under the keep matrix plus ``poisons``, queried on the pool then the poisons."""
    return TrainingJob(
        condition=name, x=pool.x, y=pool.y, keep=design.keep, extra_x=poisons.x, extra_y=poisons.y,
        queries=np.concatenate([pool.x, poisons.x]) if poisons.total else pool.x, num_classes=pool.num_classes,
    )


def job_digest(job: TrainingJob) -> str:
    """What decides the models of a job: two jobs with one digest train the same models."""
    digest = hashlib.sha256()
    extra_keep = job.extra_keep if job.extra_keep is not None else np.ones((job.keep.shape[0], job.extra_y.shape[0]))
    for array in (job.keep, extra_keep.astype(bool), job.extra_x, job.extra_y, job.queries):
        digest.update(repr(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(repr(job.private).encode())
    return digest.hexdigest()


@dataclass
class TrainedConditions:
    """The jobs trained so far in one run, by digest: a defense that changes nothing (no
    duplicate in a clean pool) reuses the undefended models instead of training them again."""

    by_digest: dict[str, TrainingJob] = field(default_factory=dict)

    def train(self, run: RunContext, job: TrainingJob) -> tuple[np.ndarray, str, float]:
        """Logits ``(M, Q, A, C)`` of ``job``, the condition whose shards hold them, and the
        seconds they took to train (0 when another condition's models are reused)."""
        digest = job_digest(job)
        trained = self.by_digest.setdefault(digest, job)
        if trained is not job:
            run.log(f"{job.condition}: the same training sets as {trained.condition}; its models are reused")
        logits, seconds = run.train(trained)  # in memory: no logits file asked for
        return logits, trained.condition, seconds if trained is job else 0.0


@dataclass(frozen=True)
class DefendedCondition:
    """One condition trained behind a defense: its job before and after the defense, the
    logits ``(M, N + P, A, C)`` on the pool then its poisons, and whose models they are."""

    job: TrainingJob
    defended: TrainingJob
    logits: np.ndarray
    trained_as: str
    train_seconds: float

    @property
    def pool_logits(self) -> np.ndarray:
        return self.logits[:, : self.job.x.shape[0]]

    @property
    def poison_logits(self) -> np.ndarray:
        return self.logits[:, self.job.x.shape[0]:]


def defend(
    run: RunContext, trained: TrainedConditions, defense, job: TrainingJob, *,
    first_pass: np.ndarray | None = None,
) -> TrainingJob:
    """``job`` as the pipeline trains it behind ``defense``. The loss filter needs
    ``first_pass``: the logits of ``job`` trained undefended (trained here when not given)."""
    config = run.config
    kind = defense.kind
    if kind is DefenseKind.NONE:
        return job
    if kind is DefenseKind.DP_SGD:
        run.log(f"{job.condition}: calibrating DP-SGD's noise to epsilon {defense.epsilon:g} per example "
                f"(Opacus, {defense.accountant.value} accountant)")
        return defense_stage.private_job(job, defense, batch_size=config.train.batch_size, epochs=config.train.epochs)
    losses = None
    if kind is DefenseKind.LOSS_FILTER:
        if first_pass is None:
            first_pass, _, _ = trained.train(run, replace(job, condition=f"{job.condition}-unfiltered"))
        labels = np.concatenate([job.y, job.extra_y])
        losses = defense_stage.example_losses(first_pass[:, :, 0, :].astype(np.float64), labels)
    masks = defense_stage.filter_masks(defense, job, losses=losses)
    return defense_stage.filtered_job(job, masks, defense_name=kind.value)


def train_defended(
    run: RunContext, trained: TrainedConditions, job: TrainingJob, defended: TrainingJob,
) -> DefendedCondition:
    logits, trained_as, seconds = trained.train(run, defended)
    return DefendedCondition(job=job, defended=defended, logits=logits, trained_as=trained_as, train_seconds=seconds)


def poisons_fitted(condition: DefendedCondition, design: Design, poisons: PoisonSet) -> float | None:
    """Share of the poisons classified as their (wrong) label by the models that did not train
    on their target: whether the models learned the poisons at all."""
    if not poisons.total:
        return None
    predicted = condition.poison_logits[:, :, 0, :].argmax(axis=2)  # (M, P)
    out = ~design.keep[:, poisons.source]
    return float(((predicted == poisons.y[None, :]) & out).sum() / max(1, out.sum()))


def privacy_entry(run: RunContext, defense, defended: TrainingJob, replicas: int) -> dict | None:
    """The accountant's figures for a DP-SGD job (None for any other), the group being a
    target's ``replicas`` poisons."""
    if defended.private is None:
        return None
    from truthserum.defense.accounting import privacy_spent  # Opacus, imported when used

    steps = defense_stage.private_steps(defended, batch_size=run.config.train.batch_size,
                                        epochs=run.config.train.epochs)
    return privacy_spent(defense, noise_multiplier=defended.private.noise_multiplier,
                         sample_rate=defended.private.sample_rate, steps=steps, group_size=replicas).to_json()


def check_defenses_fit_model(config, pool: Dataset, defenses) -> None:
    """Refuse DP-SGD for a model it cannot train, before anything is written."""
    if any(defense.kind is DefenseKind.DP_SGD for defense in defenses):
        check_private_module(config.model.build(feature_shape=pool.feature_shape, num_classes=pool.num_classes))


def measure_condition(
    run: RunContext, pool: Dataset, design: Design, poisons: PoisonSet, condition: DefendedCondition, defense,
    *, group_size: int, signals_dtype: LogitDtype | None = None,
) -> tuple[dict, dict]:
    """A defended condition's results entry (attacks, accuracy, poisons fitted and surviving,
    privacy spent, the group being ``group_size`` replicas) and its ROC curves. With
    ``signals_dtype`` the pool's logits are written beside the signals too, for ``truthserum
    attack``."""
    config, name = run.config, condition.job.condition
    inputs = AttackInputs.from_arrays(logits=condition.pool_logits, labels=pool.y, keep=design.keep,
                                      targets=design.targets, source=f"signals-{name}", max_abs_logit=None)
    write_npz(run.run_dir.file(f"signals-{name}.npz"),
              {"labels": inputs.labels, "keep": inputs.keep, "targets": inputs.targets})
    if signals_dtype is not None:
        path = run.run_dir.file(signals_logits_name(name))
        with naming_errors(path):  # a full disk names the file, not its temporary, as in stage_train
            store = LogitStore.create(temporary_path(path), condition.pool_logits.shape, signals_dtype)
            store.write_models(0, condition.pool_logits)
            commit_temporary(store.path, path)
    attacks, curves, _ = attack_metrics(config, inputs, config.attack_options(),
                                        scores_file=run.run_dir.file(f"scores-{name}.npz"), progress=run.progress,
                                        label=name)
    entry = {
        "defense": defense_name(defense),
        "replicas": poisons.replicas if poisons.total else 0,
        "poison_fraction": poisons.total / (poisons.total + float(design.keep.sum(axis=1).mean())),
        "trained_as": condition.trained_as,
        "accuracy": accuracy(condition.pool_logits, pool.y, design.keep),
        "poison_fit": poisons_fitted(condition, design, poisons),
        "target_flipped": (poison_fit(condition.pool_logits, design.keep, design.targets, poisons.target_labels)
                           if poisons.total else None),
        "survivors": defense_stage.survivors(condition.job, condition.defended, sources=poisons.source, targets=design.targets),
        "privacy": privacy_entry(run, defense, condition.defended, group_size),
        "attacks": attacks,
    }
    return entry, curves


@dataclass
class DefendedConditions:
    """The membership task's conditions behind its ``defense`` section: every filter applied,
    and every refusal made, before the first condition trains (the loss filter, which needs
    its first pass, filters when its condition comes)."""

    defense: Any
    pool: Dataset
    design: Design
    poisons: dict[str, PoisonSet]
    jobs: dict[str, TrainingJob]
    defended: dict[str, TrainingJob]
    trained: TrainedConditions

    @classmethod
    def plan(cls, run: RunContext, defense, pool: Dataset, design: Design,
             poisons: dict[str, PoisonSet], *, exact: bool) -> DefendedConditions | None:
        """None for exact replicas without a defense (the task's own path, unchanged). Poisons
        other than exact replicas are written to ``poisons-<condition>.npz`` (``poisons.npz``
        holds the exact replicas and each target's wrong label, which every strategy shares)."""
        if defense.kind is DefenseKind.NONE and exact:
            return None
        if not exact:
            for name, condition_poisons in poisons.items():
                write_npz(run.run_dir.file(f"poisons-{name}.npz"),
                          {"x": condition_poisons.x, "y": condition_poisons.y, "source": condition_poisons.source})
        trained = TrainedConditions()
        jobs = {name: poisoned_job(name, pool, design, condition_poisons) for name, condition_poisons in poisons.items()}
        defended = {} if defense.kind is DefenseKind.LOSS_FILTER else {
            name: defend(run, trained, defense, job) for name, job in jobs.items()
        }
        return cls(defense, pool, design, poisons, jobs, defended, trained)

    def train_and_measure(self, run: RunContext, name: str) -> tuple[dict, dict, float]:
        """Condition ``name``'s results entry, ROC curves and training seconds."""
        job = self.jobs[name]
        defended = self.defended.get(name) or defend(run, self.trained, self.defense, job)
        outcome = train_defended(run, self.trained, job, defended)
        poisons = self.poisons[name]
        entry, curves = measure_condition(
            run, self.pool, self.design, poisons, outcome, self.defense,
            group_size=poisons.replicas if poisons.total else max(1, run.config.poison.replicas),
            signals_dtype=run.config.query.signals_dtype,
        )
        return entry, curves, outcome.train_seconds


CLEAN = "clean"


def poison_columns(config, pool: Dataset, design: Design, target_labels: np.ndarray, strategies,
                   replicas: int) -> dict[str, PoisonSet]:
    """The clean column (no poisons), then every strategy's ``replicas`` poisons per target, each
    strategy drawing from its own seeded stream: by strategy name."""
    columns = {CLEAN: replicate_poisons(x=pool.x, targets=design.targets, target_labels=target_labels, replicas=0)}
    for strategy in strategies:
        name = strategy_name(strategy)
        columns[name] = strategy_poisons(
            strategy, x=pool.x, y=pool.y, targets=design.targets, target_labels=target_labels, replicas=replicas,
            rng=seeding.rng(config.seed, "poison", name),
        )
    return columns


_DATA_FILTERS = (DefenseKind.DEDUP_EXACT, DefenseKind.CONFLICTING_LABELS, DefenseKind.NEAR_DUPLICATES)


def check_filters(config, pool: Dataset, defenses, strategies, replicas: int) -> None:
    """Run every data filter on the training sets the run will hand it, and refuse (one line)
    one that takes most of a model's set, before the run directory is written: a refusal then
    leaves nothing behind that would stand in the way of the corrected config. The design and
    the poisons are drawn as the run's stages draw them (the same seeds), then dropped."""
    data_filters = [defense for defense in defenses if defense.kind in _DATA_FILTERS]
    if not data_filters:
        return
    design = draw_design(config, pool)
    labels = make_label_flip_poisons(x=pool.x, y=pool.y, targets=design.targets, replicas=0,
                                     num_classes=pool.num_classes, rng=seeding.rng(config.seed, "poison")).target_labels
    for name, poisons in poison_columns(config, pool, design, labels, strategies, replicas).items():
        job = poisoned_job(name, pool, design, poisons)
        for defense in data_filters:
            defense_stage.filtered_job(job, defense_stage.filter_masks(defense, job), defense_name=defense.kind.value)
