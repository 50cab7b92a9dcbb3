"""The defense matrix: targeted membership inference under every defense (rows, none first)
against every poison strategy (columns, clean first).

All cells share the keep matrix, the targets, every target's wrong label and every model's
initialisation, so a cell differs from its row's clean cell by the poisons alone and from its
column's undefended cell by the defense alone. Each cell is a condition of the run directory,
named ``<defense>.<strategy>`` (``none.clean``, ``dp-sgd.blended``). Every filter is applied,
and every refusal made, before the first model trains; the loss filter's first pass is the
undefended cell of its column, and a defense that changes nothing reuses the undefended models.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from truthserum.config.defense import DefenseKind, NoDefense, defense_name
from truthserum.data.datasets import Dataset
from truthserum.design import Design
from truthserum.poison.label_flip import PoisonSet
from truthserum.report.defenses import matrix_summary, plot_defense_matrix
from truthserum.store.rundir import write_npz
from truthserum.tasks.defended import (
    CLEAN, DefendedCondition, TrainedConditions, check_defenses_fit_model, check_filters, defend, measure_condition,
    poison_columns, poisoned_job, train_defended,
)
from truthserum.tasks.membership import stage_poisons
from truthserum.tasks.results import RunResults
from truthserum.tasks.skeleton import RunContext, TaskOutput
from truthserum.tasks.stages import PoolInputs, poison_share_warning, prepare_pool, stage_design
from truthserum.train.executors import ShardBackend

@dataclass(frozen=True)
class DefenseMatrixRunner(PoolInputs):
    """Task ``defenses``: one membership condition per (defense, strategy) cell."""

    def prepare(self, config, *, device: torch.device, backend: ShardBackend) -> Dataset:
        pool = prepare_pool(config)
        check_defenses_fit_model(config, pool, config.defenses)
        check_filters(config, pool, config.defenses, config.strategies, config.poison.replicas)
        return pool

    def _columns(self, run: RunContext, pool: Dataset, design: Design) -> dict[str, PoisonSet]:
        config = run.config
        exact = stage_poisons(run.run_dir, config, pool, design, run.log)
        columns = poison_columns(config, pool, design, exact.target_labels, config.strategies, config.poison.replicas)
        for name, poisons in columns.items():
            if name != CLEAN:
                write_npz(run.run_dir.file(f"poisons-{name}.npz"),
                          {"x": poisons.x, "y": poisons.y, "source": poisons.source})
        return columns

    def run(self, run: RunContext, pool: Dataset) -> TaskOutput:
        config, log = run.config, run.log
        design = stage_design(run.run_dir, config, pool, log)
        columns = self._columns(run, pool, design)
        rows = [NoDefense(), *config.defenses]
        members = float(design.keep.sum(axis=1).mean())
        total = config.poison.replicas * len(design.targets)
        run.warn(poison_share_warning("every strategy", total / (total + members)))
        log(f"{pool.name}: {pool.num_points} pool points; {config.design.num_models} models with about "
            f"{members:.0f} members each; {len(design.targets)} targets x {config.poison.replicas} replicas; "
            f"{len(rows)} defenses x {len(columns)} columns")

        trained = TrainedConditions()
        jobs = {(defense_name(d), column): poisoned_job(f"{defense_name(d)}.{column}", pool, design, poisons)
                for d in rows for column, poisons in columns.items()}
        # every filter and every refusal before the first model trains (the loss filter needs
        # its first pass, the undefended cell, and comes later)
        defended = {key: defend(run, trained, d, jobs[key])
                    for d in rows if d.kind is not DefenseKind.LOSS_FILTER
                    for key in [(defense_name(d), column) for column in columns]}

        conditions: dict[str, dict] = {}
        curves: dict = {}
        undefended: dict[str, DefendedCondition] = {}
        train_seconds = 0.0
        for d in rows:
            for column, poisons in columns.items():
                key = (defense_name(d), column)
                job = jobs[key]
                if key not in defended:  # the loss filter, on the undefended cell's models
                    defended[key] = defend(run, trained, d, job, first_pass=undefended[column].logits)
                condition = train_defended(run, trained, job, defended[key])
                train_seconds += condition.train_seconds
                if d.kind is DefenseKind.NONE:
                    undefended[column] = condition
                entry, cell_curves = measure_condition(run, pool, design, poisons, condition, d,
                                                       group_size=config.poison.replicas)
                entry["strategy"] = column
                conditions[job.condition] = entry
                curves.update({(job.condition, attack): curve for attack, curve in cell_curves.items()})
        details = {"defense_matrix": matrix_summary(conditions, [defense_name(d) for d in rows], list(columns))}
        return TaskOutput(conditions=conditions, details=details, train_seconds=train_seconds, plot_data=curves)

    def plot(self, run: RunContext, results: RunResults, output: TaskOutput) -> None:
        plot_defense_matrix(output.details["defense_matrix"], run.run_dir.file("defense-matrix.png"))

