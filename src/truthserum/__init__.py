"""truthserum: measure how poisoning a few training points amplifies privacy leakage.

The package follows the stages of an experiment: :mod:`~truthserum.data`,
:mod:`~truthserum.design`, :mod:`~truthserum.poison`, :mod:`~truthserum.train`,
:mod:`~truthserum.query`, :mod:`~truthserum.attacks`, :mod:`~truthserum.metrics` and
:mod:`~truthserum.report`; :mod:`~truthserum.runner` wires them to a run directory.
"""

from truthserum.attacks import AttackInputs, AttackName, load_signals, score_attacks
from truthserum.config import RunConfig, load_config, parse_config
from truthserum.errors import TruthserumError
from truthserum.metrics import evaluate
from truthserum.runner import run_experiment

__version__ = "0.1.0"

__all__ = [
    "AttackInputs", "AttackName", "RunConfig", "TruthserumError", "evaluate", "load_config",
    "load_signals", "parse_config", "run_experiment", "score_attacks",
]
