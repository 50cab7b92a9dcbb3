"""truthserum: measure how poisoning a few training points amplifies privacy leakage.

The package follows the stages of an experiment: :mod:`~truthserum.data`,
:mod:`~truthserum.design`, :mod:`~truthserum.poison`, :mod:`~truthserum.train`,
:mod:`~truthserum.query`, :mod:`~truthserum.attacks`, :mod:`~truthserum.metrics` and
:mod:`~truthserum.report`; :mod:`~truthserum.runner` wires them to a run directory.
Tables (:mod:`~truthserum.tabular`) add two tasks, :mod:`~truthserum.attribute` inference and
:mod:`~truthserum.untargeted` poisoning, whose runners are in :mod:`~truthserum.tasks`;
language models (:mod:`~truthserum.lm`) add the fourth, secrets in training text.
"""

from truthserum.attacks import AttackInputs, AttackName, AttackOptions, load_signals, score_attacks
from truthserum.audit import epsilon_from_counts, epsilon_lower_bound
from truthserum.config import RunConfig, load_config, parse_config
from truthserum.errors import TruthserumError
from truthserum.metrics import bootstrap_intervals, evaluate
from truthserum.runner import run_experiment
from truthserum.sweep import run_replica_sweep, run_shadow_sweep
from truthserum.tasks import run_task

__version__ = "0.1.0"

__all__ = [
    "AttackInputs", "AttackName", "AttackOptions", "RunConfig", "TruthserumError",
    "bootstrap_intervals", "epsilon_from_counts", "epsilon_lower_bound", "evaluate", "load_config",
    "load_signals", "parse_config", "run_experiment", "run_replica_sweep", "run_shadow_sweep",
    "run_task", "score_attacks",
]
