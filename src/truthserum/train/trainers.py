"""Any framework's training through one small protocol: a :class:`ModelTrainer` fits one model
on a training set with a seed and returns its logits (or log-probabilities) on query points.
scikit-learn, XGBoost or JAX training plugs in this way; :class:`SklearnTrainer` adapts any
scikit-learn classifier.

Why one method: the audit needs nothing from a model but its outputs on the pool, so the
trainer keeps its model to itself and the run directory stores only logits, as it does for
the built-in models.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from truthserum.config import RunConfig
from truthserum.errors import ConfigError, TrainingError
from truthserum.query.probabilities import SMALLEST_PROBABILITY, looks_like_probabilities, to_log_probabilities
from truthserum.train.shard import EpochReport, TrainingJob, model_seed, shard_training_set


@runtime_checkable
class ModelTrainer(Protocol):
    """Trains one model and queries it. Implement this for a framework truthserum does not run."""

    def fit_predict(
        self, x: np.ndarray, y: np.ndarray, queries: np.ndarray, *, num_classes: int, seed: int,
    ) -> np.ndarray:
        """Train a fresh model on ``x`` ``(n, *features)`` with labels ``y`` ``(n,)`` in
        ``0..num_classes - 1``, drawing all its randomness from ``seed``, and return its
        ``(len(queries), num_classes)`` logits or log-probabilities on ``queries``.

        Every call must start from scratch: the audit trains many models, each on its own
        training set."""


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def describe_trainer(trainer: ModelTrainer) -> dict:
    """What the trainer is, with a fingerprint a run directory records: the class (a
    scikit-learn estimator's own, for :class:`SklearnTrainer`) and its ``repr`` (scikit-learn's
    lists every parameter set away from its default). A class without a ``repr`` of its own
    is described by its attributes instead, memory addresses left out: the default ``repr``
    holds one, which would differ on every run."""
    if type(trainer).__repr__ is object.__repr__:
        text = f"{type(trainer).__qualname__}({_ADDRESS.sub('', repr(sorted(vars(trainer).items())))})"
    else:
        text = repr(trainer)
    estimator = getattr(trainer, "estimator", None) if isinstance(trainer, SklearnTrainer) else None
    return {
        "kind": "trainer", "class": type(estimator if estimator is not None else trainer).__qualname__,
        "repr": text[:500], "repr_sha256": hashlib.sha256(text.encode()).hexdigest(),
    }


@dataclass(frozen=True)
class SklearnTrainer:
    """Any scikit-learn classifier as a :class:`ModelTrainer`.

    Each model is a ``sklearn.base.clone`` of ``estimator`` (so nothing fitted carries over),
    with every ``random_state`` (a pipeline's steps' too) set to the model's seed, fitted on the
    flattened features. Its outputs are ``predict_log_proba`` (``log`` of ``predict_proba``
    where there is none), over every class: a class missing from a model's training set gets
    the smallest probability. A model whose probabilities saturate at exactly 0 or 1 gives the
    attacks less to work with than raw logits would; a trainer of your own can return logits.
    """

    estimator: Any

    def __post_init__(self) -> None:
        for method in ("fit", "predict_proba"):
            if not callable(getattr(self.estimator, method, None)):
                raise ConfigError(
                    f"model: {type(self.estimator).__name__} has no {method}(); SklearnTrainer needs a "
                    "scikit-learn classifier with fit and predict_proba"
                )

    def __repr__(self) -> str:
        return f"SklearnTrainer({self.estimator!r})"

    def fit_predict(
        self, x: np.ndarray, y: np.ndarray, queries: np.ndarray, *, num_classes: int, seed: int,
    ) -> np.ndarray:
        from sklearn.base import clone

        model = clone(self.estimator)
        # every random_state, a pipeline's steps' too (step__random_state)
        seeds = {key: seed % 2**32 for key in model.get_params()
                 if key == "random_state" or key.endswith("__random_state")}
        model.set_params(**seeds)
        model.fit(x.reshape(len(x), -1), y)
        flat = queries.reshape(len(queries), -1)
        if callable(getattr(model, "predict_log_proba", None)):
            with np.errstate(divide="ignore"):
                log_p = np.asarray(model.predict_log_proba(flat), dtype=np.float64)
        else:
            log_p = to_log_probabilities(model.predict_proba(flat))
        out = np.full((len(queries), num_classes), np.log(SMALLEST_PROBABILITY))
        out[:, np.asarray(model.classes_, dtype=np.int64)] = np.maximum(log_p, np.log(SMALLEST_PROBABILITY))
        return out


def is_sklearn_estimator(model: Any) -> bool:
    """Duck-typed: scikit-learn's estimator interface (``get_params`` and ``fit``)."""
    return callable(getattr(model, "get_params", None)) and callable(getattr(model, "fit", None))


def as_trainer(model: Any) -> ModelTrainer | None:
    """``model`` as a :class:`ModelTrainer`: a scikit-learn classifier wrapped in
    :class:`SklearnTrainer`, a trainer as it is, or None.

    scikit-learn comes first: a ``Pipeline`` has a ``fit_predict`` of its own (clustering's,
    when its last step has one), which is not the protocol's.

    Raises:
        ConfigError: a scikit-learn estimator without ``predict_proba``.
    """
    if is_sklearn_estimator(model):
        if not callable(getattr(model, "predict_proba", None)):
            raise ConfigError(
                f"model: {type(model).__name__} has no predict_proba (an SVC needs probability=True); or wrap its "
                "decision_function in a ModelTrainer (docs/own-model.md)"
            )
        return SklearnTrainer(model)
    if isinstance(model, ModelTrainer):
        return model
    return None


@dataclass
class ProtocolShardTrainer:
    """A shard trainer (:data:`~truthserum.train.shard.ShardTrainer`) that calls a
    :class:`ModelTrainer` once per model, with the model's own training set and seed, and queries
    it on the job's points (the identity view only: the trainer sees arrays, not images to shift).
    Probabilities where logits were expected are taken as probabilities, and said once."""

    trainer: ModelTrainer
    probabilities: bool | None = None  # what the first model returned; every other must agree

    @property
    def warned_probabilities(self) -> bool:
        return bool(self.probabilities)

    def progress(self, config: RunConfig, models: range) -> tuple[int, str]:
        """One report per model trained."""
        return len(models), "model"

    def __call__(
        self, config: RunConfig, job: TrainingJob, models: range, device: torch.device,
        on_epoch: EpochReport | None = None,
    ) -> dict[str, np.ndarray]:
        if job.private is not None:
            raise ConfigError(f"{type(self.trainer).__name__} trains itself; DP-SGD (defense dp-sgd) is for "
                              "models truthserum trains")
        started = time.perf_counter()
        x, y, train_indices = shard_training_set(job, models)
        logits = np.empty((len(models), job.queries.shape[0], 1, job.num_classes), dtype=np.float32)
        for position, m in enumerate(models):
            rows = train_indices[position]
            out = self.trainer.fit_predict(x[rows], y[rows], job.queries, num_classes=job.num_classes,
                                           seed=model_seed(config, m))
            logits[position, :, 0] = self._checked(out, m, job)
            if on_epoch is not None:
                on_epoch(position, float("nan"))
        return {
            "logits": logits, "models": np.array(list(models), dtype=np.int64), "loss": np.empty(0),
            "train_seconds": np.float64(time.perf_counter() - started),
        }

    def _checked(self, out: Any, model: int, job: TrainingJob) -> np.ndarray:
        name = type(self.trainer).__name__
        out = np.asarray(out)
        expected = (job.queries.shape[0], job.num_classes)
        if out.shape != expected or out.dtype.kind not in "fiu":
            raise TrainingError(f"model {model}: {name}.fit_predict returned {out.dtype} {out.shape}; expected "
                                f"{expected} floats (logits or log-probabilities on the queries)")
        probabilities = looks_like_probabilities(out)  # in the dtype returned, whose rounding it allows for
        # -inf is the log of a probability of 0: the smallest probability, as for a classifier's
        out = np.maximum(out.astype(np.float64), np.log(SMALLEST_PROBABILITY))
        if not np.isfinite(out).all():
            raise TrainingError(f"model {model}: {name}.fit_predict returned NaN or +inf")
        if self.probabilities is None:
            self.probabilities = probabilities
        elif probabilities != self.probabilities:
            said = {True: "probabilities", False: "logits"}
            raise TrainingError(f"model {model}: {name}.fit_predict returned {said[probabilities]}, the models "
                                f"before it {said[self.probabilities]}; return one kind from every model")
        return to_log_probabilities(out) if probabilities else out
