"""Attack the logits of a plan's models trained elsewhere (``truthserum attack --plan DIR
--logits FILE``): the logits are checked against the plan, then every condition is scored with
every chosen attack and measured as ``truthserum run`` measures its own, into ``results.json``
(clean and poisoned: accuracy, poison fit, attacks), ``roc.png`` and ``scores-<condition>.npz``.
By default they go into the plan directory, whose own files are never written.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from truthserum.attacks import AttackInputs, AttackOptions
from truthserum.attacks.inputs import LogitsKind
from truthserum.errors import SignalsError
from truthserum.metrics.accuracy import poison_fit
from truthserum.metrics.guidance import ModelFacts, RunSettings, guidance_for_conditions, guidance_warning
from truthserum.metrics.roc import RocCurve
from truthserum.store.rundir import REPORT_FILE
from truthserum.store.user_files import read_user_npz
from truthserum.tasks.attacking import (
    OUTPUT_MARK, ROC_FILE, RESULTS_FILE, as_logits, check_out_dir, make_out_dir, measure, model_accuracy,
    resolve_attacks, scoring_config, settings_json, supported_inputs, without_population, write_outputs,
)
from truthserum.tasks.plan import Plan, read_plan
from truthserum.tasks.results import RunResults
from truthserum.tasks.stages import Log, log_to_stderr, poison_fit_warning, poison_share_warning, record_warning


def scores_file(condition: str) -> str:
    return f"scores-{condition}.npz"


def _where(array: np.ndarray, bad: np.ndarray) -> str:
    first = np.unravel_index(int(np.argmax(bad)), array.shape)
    return f"model {first[0]}, point {first[1]}"


def read_plan_logits(plan: Plan, path: Path) -> dict[str, np.ndarray]:
    """The logits of every condition of ``plan`` in the ``.npz`` at ``path``, checked against
    it: the condition names, and per condition the models, pool points and classes, a float
    dtype and finite values.

    Raises:
        SignalsError: one line naming every problem found.
    """
    path = Path(path)
    arrays = read_user_npz(path, required=(), error=SignalsError)
    names = [condition.name for condition in plan.conditions]
    problems = []
    missing = [name for name in names if name not in arrays]
    unexpected = [name for name in arrays if name not in names]
    if missing:
        problems.append(f"no array for condition(s) {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected array(s) {', '.join(unexpected)}")
    if missing or unexpected:
        problems[-1] += f" (the plan's conditions: {', '.join(names)}; arrays found: {', '.join(arrays) or 'none'})"
    expected = (plan.num_models, plan.num_points, plan.num_classes)
    for name in (name for name in names if name in arrays):
        logits = arrays[name]
        if logits.ndim not in (3, 4):
            problems.append(f"{name} has shape {logits.shape}; expected (M, N, C) = {expected} or (M, N, A, C)")
            continue
        if logits.dtype.kind != "f":
            problems.append(f"{name} is {logits.dtype}; logits must be floating point")
        if logits.shape[0] != plan.num_models:
            problems.append(f"{name} holds {logits.shape[0]} models; the plan has {plan.num_models}")
        if logits.shape[1] != plan.num_points:
            problems.append(f"{name} holds {logits.shape[1]} points; the pool has {plan.num_points}")
        if logits.shape[-1] != plan.num_classes:
            problems.append(f"{name} holds {logits.shape[-1]} classes; the pool has {plan.num_classes}")
        if logits.ndim == 4 and logits.shape[2] < 1:
            problems.append(f"{name} holds no query view (A = 0)")
        if logits.dtype.kind == "f":
            bad = ~np.isfinite(logits)
            if bad.any():
                problems.append(f"{name} holds {int(bad.sum())} NaN or infinite values (the first at "
                                f"{_where(logits, bad)})")
    if problems:
        raise SignalsError(f"{path}: {'; '.join(problems)}")
    return {name: arrays[name] for name in names}


def attack_plan(
    *, plan_dir: Path, logits: Path, attacks: str | Sequence[str] | None = None,
    options: AttackOptions | None = None, out_dir: Path | None = None, skip_unsupported: bool = False,
    logits_kind: LogitsKind | str = LogitsKind.AUTO, log: Log = log_to_stderr,
) -> RunResults:
    """Score the logits of a plan's models, trained elsewhere, as a run scores its own.

    Args:
        plan_dir: a directory written by :func:`~truthserum.tasks.plan.write_plan`.
        logits: ``.npz`` with one array per condition (see ``LOGITS_LAYOUT`` in
            :mod:`truthserum.tasks.plan`).
        attacks: attack names or ``"all"``; default: the config's attacks.
        options: shadow budget, seed and RMIA's options; default: the config's (its seed too),
            so that the numbers are those ``truthserum run`` would report on the same logits.
        out_dir: receives ``results.json``, ``roc.png`` and ``scores-<condition>.npz``; default
            the plan directory.
        skip_unsupported: drop target points without the shadow models an attack needs.
        logits_kind: ``auto`` (probabilities recognised, with a warning), ``logits`` or
            ``probabilities``.
        log: where warnings are said as they happen.

    Raises:
        RunDirError: no finished plan, or an ``out_dir`` that holds something else.
        SignalsError: logits that do not fit the plan, or points without shadows.
    """
    started = time.perf_counter()
    plan = read_plan(plan_dir)
    names = resolve_attacks(attacks, default=plan.config.attacks)
    options = options or plan.config.attack_options()
    options.validate()
    out = plan.root if out_dir is None else Path(out_dir)
    writes = [RESULTS_FILE, ROC_FILE, REPORT_FILE, *(scores_file(c.name) for c in plan.conditions)]
    check_out_dir(out, writes=writes, inputs=[Path(logits)], plan_dir=plan.root)
    arrays = read_plan_logits(plan, logits)
    design, labels, poison_labels = plan.design(), plan.labels(), plan.poison_labels()
    warnings: list[str] = []
    prepared = {}
    for condition in plan.conditions:  # every check before anything is written
        source = f"{logits}: {condition.name}"
        inputs = AttackInputs.from_arrays(logits=arrays.pop(condition.name), labels=labels, keep=design.keep,
                                          targets=design.targets, source=source)
        if condition is plan.conditions[0]:
            names = without_population(names, attacks, inputs, source=str(plan.root), warnings=warnings, log=log)
        inputs, probabilities = as_logits(inputs, logits_kind, source=source, warnings=warnings, log=log)
        support = supported_inputs(inputs, names, options, skip=skip_unsupported, source=str(logits))
        if condition is plan.conditions[0]:  # the same keep matrix: the same points for every condition
            record_warning(warnings, log, support.warning(str(logits)))
        prepared[condition.name] = inputs, probabilities, support
    config = scoring_config(names, options, base=plan.config)
    make_out_dir(out)
    members_per_model = float(design.keep.sum(axis=1).mean())
    conditions: dict[str, dict] = {}
    curves: dict[tuple[str, str], RocCurve] = {}
    for condition in plan.conditions:
        inputs, _, support = prepared[condition.name]
        total = condition.replicas * plan.num_targets
        fraction = total / (total + members_per_model)
        if condition.replicas:
            record_warning(warnings, log, poison_share_warning(condition.name, fraction))
        metrics, condition_curves, _ = measure(config, support, options, scores_file=out / scores_file(condition.name),
                                               label=condition.name)
        fit = (poison_fit(inputs.logits, design.keep, design.targets, poison_labels)
               if condition.replicas else None)
        record_warning(warnings, log, poison_fit_warning(condition.name, fit))
        conditions[condition.name] = {
            "replicas": condition.replicas, "poison_fraction": fraction, "poison_fit": fit,
            "accuracy": model_accuracy(inputs.logits, labels, design.keep), "attacks": metrics,
        }
        curves.update({(condition.name, name): curve for name, curve in condition_curves.items()})
    # the models are the user's, trained elsewhere: the guidance can say what the design should
    # change, and words what the models and their training should
    guidance = guidance_for_conditions(conditions, RunSettings(
        model=ModelFacts(name="your models (trained elsewhere)", parameters=None, model_in_config=False,
                         training_in_config=False),
        epochs=None, weight_decay=None, members_per_model=members_per_model, num_targets=plan.num_targets,
        num_models=plan.num_models,
    ))
    if guidance is not None:
        record_warning(warnings, log, guidance_warning(guidance))
    replicas = plan.config.poison.replicas
    total = replicas * plan.num_targets
    results = RunResults.from_json({
        "task": "membership",
        "config": plan.config.to_json_dict(),
        OUTPUT_MARK: settings_json(
            names, options, config, plan=str(plan.root), logits=str(logits),
            logits_kind={name: "probabilities" if entry[1] else "logits" for name, entry in prepared.items()},
            dropped_targets=int(prepared[plan.conditions[0].name][2].dropped_targets.size),
            dropped_population=int(prepared[plan.conditions[0].name][2].dropped_population.size),
        ),
        "poison": {"targets": plan.num_targets, "replicas": replicas, "total": total,
                   "fraction": total / (total + members_per_model),
                   "fit": conditions.get("poisoned", {}).get("poison_fit")},
        **({} if guidance is None else {"guidance": guidance.to_json()}),
        "conditions": conditions,
        "timing": {"total_seconds": time.perf_counter() - started},
        "device": "elsewhere",
        "warnings": warnings,
    })
    write_outputs(out, results, curves, log)
    return results
