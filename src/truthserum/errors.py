"""Errors that reach the user as one line.

Everything the user can get wrong (a config, a data file, a run directory, a signals file)
raises a subclass of :class:`TruthserumError`. The CLI prints its message and exits non-zero;
anything else escaping is a bug in truthserum and keeps its traceback.
"""


class TruthserumError(Exception):
    """A problem with the user's input, reported as one clear line."""


class ConfigError(TruthserumError):
    """The experiment configuration is missing, malformed or inconsistent."""


class DataError(TruthserumError):
    """A dataset cannot be used: unreadable, wrong shapes, bad values or labels."""


class SignalsError(TruthserumError):
    """A signals file (logits, labels, keep matrix, targets) is malformed."""


class RunDirError(TruthserumError):
    """A run directory belongs to another experiment or cannot be written."""


class TrainingError(TruthserumError):
    """Training failed in a way the user can fix through the config (it diverged, say)."""


class BackendError(TruthserumError):
    """The training backend is missing, unreachable, or lacks what the run asks of it."""
