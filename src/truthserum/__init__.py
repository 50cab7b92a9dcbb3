"""truthserum: measure how poisoning a few training points amplifies privacy leakage.

The package is the pipeline, a subpackage per stage: :mod:`~truthserum.data`,
:mod:`~truthserum.design`, :mod:`~truthserum.poison`, :mod:`~truthserum.train`,
:mod:`~truthserum.query`, :mod:`~truthserum.attacks`, :mod:`~truthserum.metrics` and
:mod:`~truthserum.report`; :mod:`~truthserum.tasks` runs every task (membership, attribute,
untargeted, lm) through one skeleton, joining the stages by files in a run directory
(:mod:`~truthserum.store`), configured by :mod:`~truthserum.config`.
"""

from __future__ import annotations

from importlib import import_module as _import_module
from typing import TYPE_CHECKING as _TYPE_CHECKING

__version__ = "0.1.0"  # the version in pyproject.toml (tests/test_cli_fast.py checks they agree)

# Public names and the modules that define them, imported on first use: ``import truthserum``
# (and so the command line's --help) loads no numpy, torch or pydantic.
_EXPORTS = {
    "AttackInputs": "truthserum.attacks",
    "AttackName": "truthserum.attacks",
    "AttackOptions": "truthserum.attacks",
    "load_signals": "truthserum.attacks",
    "score_attacks": "truthserum.attacks",
    "epsilon_from_counts": "truthserum.metrics.epsilon",
    "epsilon_lower_bound": "truthserum.metrics.epsilon",
    "epsilon_bounds": "truthserum.metrics.bounds",
    "ceiling_table": "truthserum.metrics.bounds",
    "RunConfig": "truthserum.config",
    "dump_config": "truthserum.config",
    "load_config": "truthserum.config",
    "parse_config": "truthserum.config",
    "TruthserumError": "truthserum.errors",
    "bootstrap_intervals": "truthserum.metrics.bootstrap",
    "evaluate": "truthserum.metrics.attack",
    "run_experiment": "truthserum.tasks.membership",
    "run_replica_sweep": "truthserum.tasks.sweeps",
    "run_shadow_sweep": "truthserum.tasks.sweeps",
    "run_insertion_sweep": "truthserum.tasks.lm_sweep",
    "run_task": "truthserum.tasks",
    "RunResults": "truthserum.tasks.results",
    "register_attack": "truthserum.attacks",
    "audit_membership": "truthserum.tasks.audit",
    "Dataset": "truthserum.data.datasets",
    "MetricsConfig": "truthserum.config.sections",
    "ModelConfig": "truthserum.config.sections",
    "QueryConfig": "truthserum.config.sections",
    "TrainConfig": "truthserum.config.sections",
    "ModelTrainer": "truthserum.train.trainers",
    "SklearnTrainer": "truthserum.train.trainers",
    "attack_signals": "truthserum.tasks.signals",
    "apply_suggestions": "truthserum.config.suggestions",
    "attack_plan": "truthserum.tasks.plan_attack",
    "write_plan": "truthserum.tasks.plan",
    "read_plan": "truthserum.tasks.plan",
    "Plan": "truthserum.tasks.plan",
    "report_run": "truthserum.report.html",
}

if _TYPE_CHECKING:
    from truthserum.attacks import (
        AttackInputs, AttackName, AttackOptions, load_signals, register_attack, score_attacks,
    )
    from truthserum.config import RunConfig, dump_config, load_config, parse_config
    from truthserum.config.sections import MetricsConfig, ModelConfig, QueryConfig, TrainConfig
    from truthserum.config.suggestions import apply_suggestions
    from truthserum.data.datasets import Dataset
    from truthserum.errors import TruthserumError
    from truthserum.metrics.attack import evaluate
    from truthserum.metrics.bootstrap import bootstrap_intervals
    from truthserum.metrics.bounds import ceiling_table, epsilon_bounds
    from truthserum.metrics.epsilon import epsilon_from_counts, epsilon_lower_bound
    from truthserum.report.html import report_run
    from truthserum.tasks import run_task
    from truthserum.tasks.audit import audit_membership
    from truthserum.tasks.plan import Plan, read_plan, write_plan
    from truthserum.tasks.plan_attack import attack_plan
    from truthserum.tasks.signals import attack_signals
    from truthserum.tasks.membership import run_experiment
    from truthserum.tasks.results import RunResults
    from truthserum.tasks.lm_sweep import run_insertion_sweep
    from truthserum.tasks.sweeps import run_replica_sweep, run_shadow_sweep
    from truthserum.train.trainers import ModelTrainer, SklearnTrainer


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = [
    "AttackInputs", "AttackName", "AttackOptions", "Dataset", "MetricsConfig", "ModelConfig", "ModelTrainer",
    "Plan", "QueryConfig", "RunConfig", "RunResults", "SklearnTrainer", "TrainConfig", "TruthserumError",
    "apply_suggestions", "attack_plan", "attack_signals", "audit_membership", "bootstrap_intervals", "ceiling_table",
    "dump_config", "epsilon_bounds", "epsilon_from_counts", "epsilon_lower_bound", "evaluate", "load_config", "load_signals", "parse_config", "read_plan", "register_attack", "report_run", "run_experiment", "run_insertion_sweep", "run_replica_sweep",
    "run_shadow_sweep", "run_task", "score_attacks", "write_plan",
]
