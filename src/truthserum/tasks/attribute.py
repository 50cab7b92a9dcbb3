"""The attribute task's own stages: clean and poisoned models, every candidate completion of every
target queried, each attribute attack measured on member pairs (and non-member pairs as a
control). Definitions are in :mod:`truthserum.attacks.attribute` and docs/attacks.md.

Files it adds to the run directory: ``preprocessing.json`` (the table's encoding),
``poisons.npz`` (the completion poisons of the poisoned condition), ``completions-<condition>.npz``
(logits on the completions, their labels, the true values, the member mask) and
``scores-<condition>.npz`` (each attack's ``(M, T, k)`` scores).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from truthserum import seeding
from truthserum.attacks.attribute import AttributeAttack, completion_phi, score_attribute
from truthserum.metrics.attribute import attribute_metrics, completion_fit
from truthserum.poison.completions import ambiguous_completions, make_completion_poisons
from truthserum.train.executors import ShardBackend
from truthserum.config import RunConfig
from truthserum.metrics.accuracy import accuracy
from truthserum.metrics.roc import RocCurve, roc_curve
from truthserum.report.plots import plot_roc
from truthserum.data.datasets import Dataset
from truthserum.errors import DataError
from truthserum.data.tables import completions as candidate_completions
from truthserum.store.rundir import write_npz
from truthserum.tasks.membership import conditions_for
from truthserum.tasks.results import RunResults
from truthserum.tasks.skeleton import RunContext, TaskOutput, execute
from truthserum.tasks.stages import (
    Log, PoolInputs, log_to_stderr, poison_fit_warning, poison_share_warning, stage_design,
)
from truthserum.train.shard import TrainingJob


@dataclass(frozen=True)
class AttributeRunner(PoolInputs):
    """Attribute inference: clean and poisoned models, every candidate completion queried."""

    def run(self, run: RunContext, pool: Dataset) -> TaskOutput:
        config, run_dir, log = run.config, run.run_dir, run.log
        if pool.preprocessing is None or pool.sensitive is None:  # the config checks this; data from Python may not
            raise DataError("task 'attribute' needs a table with a sensitive column (data.columns.sensitive)")
        every_completion = candidate_completions(pool.x, pool.preprocessing)  # (N, k, D)
        ambiguous = ambiguous_completions(pool.x, every_completion, pool.sensitive)
        design = stage_design(run_dir, config, pool, log, eligible=~ambiguous)

        targets = design.targets
        completions = every_completion[targets]  # (T, k, D)
        num_targets, k = completions.shape[:2]
        truth = pool.sensitive[targets]
        keep = design.keep[:, targets]
        majority = int(np.bincount(pool.sensitive, minlength=k).argmax())
        poisons = make_completion_poisons(
            completions=completions, labels=pool.y[targets], replicas=config.poison.replicas,
            num_classes=pool.num_classes, rng=seeding.rng(config.seed, "attribute-poison"),
        )
        write_npz(run_dir.file("poisons.npz"), {
            "x": poisons.x, "y": poisons.y, "target": poisons.source, "target_labels": poisons.target_labels,
        })
        members_per_model = float(design.keep.sum(axis=1).mean())
        sensitive = pool.preprocessing.require_sensitive()
        log(f"{pool.name}: {pool.num_points} pool points, {pool.num_classes} classes; "
            f"{config.design.num_models} models with about {members_per_model:.0f} members each; "
            f"{num_targets} targets, sensitive column '{sensitive.name}' with {k} values")
        if ambiguous.any():
            log(f"{int(ambiguous.sum())} pool points are not drawn as targets: another value of "
                f"'{sensitive.name}' makes them another point of the pool")

        results_by_condition: dict[str, dict] = {}
        curves: dict[tuple[str, str], RocCurve] = {}
        train_seconds = 0.0
        queries = np.concatenate([pool.x, completions.reshape(num_targets * k, -1)])
        for condition in conditions_for(config):
            poisoned = condition.replicas > 0
            share = poisons.total / (poisons.total + members_per_model) if poisoned else 0.0
            if poisoned:
                log(f"{condition.name}: {poisons.total} poisons ({num_targets} targets x {k} completions x "
                    f"{condition.replicas}), {share:.1%} of a model's training set")
                run.warn(poison_share_warning(condition.name, share))
            job = TrainingJob(
                condition=condition.name, x=pool.x, y=pool.y, keep=design.keep,
                extra_x=poisons.x if poisoned else pool.x[:0], extra_y=poisons.y if poisoned else pool.y[:0],
                queries=queries, num_classes=pool.num_classes,
            )
            logits, seconds = run.train(job)
            train_seconds += seconds
            pool_logits = logits[:, : pool.num_points]
            completion_logits = logits[:, pool.num_points:].reshape(
                logits.shape[0], num_targets, k, *logits.shape[2:]
            )
            write_npz(run_dir.file(f"completions-{condition.name}.npz"), {
                "logits": completion_logits, "labels": pool.y[targets], "truth": truth, "keep": keep,
            })
            phi = completion_phi(completion_logits, pool.y[targets])
            attacks, scores = {}, {}
            for attack in AttributeAttack:
                scores[attack.value] = score_attribute(attack, phi, keep)
                attacks[attack.value] = attribute_metrics(
                    scores[attack.value], truth, keep, majority=majority, resamples=config.metrics.bootstrap,
                    confidence=config.metrics.confidence,
                    rng=seeding.rng(config.seed, "bootstrap", "attribute", attack.value),
                )
                if k == 2:
                    margin = scores[attack.value][:, :, 1] - scores[attack.value][:, :, 0]
                    if 0 < truth.sum() < truth.size:
                        curves[(condition.name, attack.value)] = roc_curve(
                            margin[keep], np.broadcast_to(truth[None] == 1, keep.shape)[keep]
                        )
            write_npz(run_dir.file(f"scores-{condition.name}.npz"), {"truth": truth, "keep": keep, **scores})
            fit = completion_fit(completion_logits, keep, poisons.target_labels) if poisoned else None
            results_by_condition[condition.name] = {
                "replicas": condition.replicas,
                "poison_fraction": share,
                "poison_fit": fit,
                "accuracy": accuracy(pool_logits, pool.y, design.keep),
                "attacks": attacks,
            }
            run.warn(poison_fit_warning(condition.name, fit))

        details = {
            "sensitive": {
                "column": sensitive.name, "values": list(sensitive.categories),
                "majority": sensitive.categories[majority],
                "target_counts": np.bincount(truth, minlength=k).tolist(),
            },
            "targets": int(num_targets),
            "ambiguous_points": int(ambiguous.sum()),
        }
        return TaskOutput(conditions=results_by_condition, details=details, train_seconds=train_seconds,
                          plot_data=curves)

    def plot(self, run: RunContext, results: RunResults, output: TaskOutput) -> None:
        if output.plot_data:
            column = results.details["sensitive"]["column"]
            plot_roc(output.plot_data, run.run_dir.file("roc.png"),
                     title=f"Attribute inference of {column} (member targets)", run_name=run.run_dir.root.name)


def run_attribute(
    config: RunConfig, out_dir: Path, *, device: str = "cpu", progress: bool = True, log: Log = log_to_stderr,
    backend: ShardBackend | None = None,
) -> RunResults:
    """Run (or resume) the attribute-inference experiment ``config`` in ``out_dir``."""
    return execute(AttributeRunner(), config, out_dir, device=device, progress=progress, log=log, backend=backend)
