"""What a membership attack is given: signals of M models on N points, and who trained on what."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

import numpy as np

from truthserum.errors import SignalsError
from truthserum.query.probabilities import probability_tolerance, to_log_probabilities
from truthserum.store.logits import MAX_ABS_LOGIT, LogitStore, check_finite, column_chunks
from truthserum.store.user_files import read_user_npz


class LogitsKind(StrEnum):
    """What the numbers in a signals file are: ``auto`` tells probabilities (every row of the
    identity view in [0, 1], summing to 1) from logits."""

    AUTO = "auto"
    LOGITS = "logits"
    PROBABILITIES = "probabilities"


@dataclass(frozen=True)
class AttackInputs:
    """Logits of every model on every point, the labels, the keep matrix and the targets.

    Attributes:
        logits: ``(M, N, A, C)`` float; a ``(M, N, C)`` array is read as A = 1. Either an array
            in memory or a :class:`~truthserum.store.logits.LogitStore` on disk, which the
            attacks read a chunk of points at a time.
        labels: ``(N,)`` int true labels.
        keep: ``(M, N)`` bool, True where model m trained on point n.
        targets: ``(T,)`` int indices of the points under attack.
    """

    logits: np.ndarray | LogitStore
    labels: np.ndarray
    keep: np.ndarray
    targets: np.ndarray

    @classmethod
    def from_arrays(
        cls,
        *,
        logits: np.ndarray,
        labels: np.ndarray,
        keep: np.ndarray,
        targets: np.ndarray | None = None,
        source: str = "signals",
        max_abs_logit: float | None = MAX_ABS_LOGIT,
    ) -> AttackInputs:
        """Normalise shapes and dtypes, then :meth:`validate` (``max_abs_logit``: the largest
        logit size taken; None for the models truthserum trained itself, whose float32 logits
        were checked for NaN and inf)."""
        if not isinstance(logits, LogitStore):
            logits = np.asarray(logits)
        if logits.ndim == 3:
            logits = logits[:, :, None, :]
        labels = np.asarray(labels)
        keep = np.asarray(keep)
        if targets is None:
            targets = np.arange(labels.shape[0] if labels.ndim == 1 else 0)
        inputs = cls(logits=logits, labels=labels, keep=keep, targets=np.asarray(targets))
        inputs.validate(source=source, max_abs_logit=max_abs_logit)
        return inputs

    def validate(self, *, source: str = "signals", max_abs_logit: float | None = MAX_ABS_LOGIT) -> None:
        """Raise :class:`SignalsError` naming the first inconsistency."""
        logits, labels, keep, targets = self.logits, self.labels, self.keep, self.targets
        if logits.ndim != 4:
            raise SignalsError(f"{source}: logits must be (M, N, C) or (M, N, A, C), got {logits.shape}")
        if logits.dtype.kind != "f":
            raise SignalsError(f"{source}: logits must be floating point, got {logits.dtype}")
        num_models, num_points, _, num_classes = logits.shape
        if num_models < 2 or num_points < 1 or logits.shape[2] < 1 or num_classes < 2:
            raise SignalsError(
                f"{source}: logits need at least 2 models, 1 point, 1 query and 2 classes, got {logits.shape}"
            )
        if labels.shape != (num_points,):
            raise SignalsError(f"{source}: labels must have shape ({num_points},), got {labels.shape}")
        if labels.dtype.kind not in "iu":
            raise SignalsError(f"{source}: labels must be integers, got {labels.dtype}")
        if labels.min() < 0 or labels.max() >= num_classes:
            raise SignalsError(f"{source}: labels must lie in 0..{num_classes - 1}")
        if keep.shape != (num_models, num_points):
            raise SignalsError(f"{source}: keep must have shape ({num_models}, {num_points}), got {keep.shape}")
        if keep.dtype != np.bool_:
            raise SignalsError(f"{source}: keep must be boolean, got {keep.dtype}")
        if targets.ndim != 1 or targets.shape[0] == 0:
            raise SignalsError(f"{source}: targets must be a non-empty 1-D index array, got {targets.shape}")
        if targets.dtype.kind not in "iu":
            raise SignalsError(f"{source}: targets must be integers, got {targets.dtype}")
        if targets.min() < 0 or targets.max() >= num_points:
            raise SignalsError(f"{source}: targets must lie in 0..{num_points - 1}")
        if np.unique(targets).size != targets.size:
            raise SignalsError(f"{source}: targets contain duplicates")
        check_finite(logits, source=source, max_abs=max_abs_logit)  # last: it reads every logit

    @property
    def num_models(self) -> int:
        return self.logits.shape[0]

    @property
    def num_views(self) -> int:
        return self.logits.shape[2]

    @property
    def members(self) -> np.ndarray:
        """``(M, T)`` bool ground truth: did model m train on target t?"""
        return self.keep[:, self.targets]


def signals_logits_name(condition: str) -> str:
    """The logits beside ``signals-<condition>.npz`` in a run directory."""
    return f"signals-{condition}-logits.npy"


def load_signals(path: Path) -> AttackInputs:
    """Read a signals ``.npz`` (``logits``, ``labels``, ``keep``, optional ``targets``) safely.

    Without ``logits`` in it, the logits are the :class:`LogitStore` ``<stem>-logits.npy``
    beside it (as a run directory keeps them), read a chunk of points at a time."""
    path = Path(path)
    arrays = read_user_npz(path, required=("labels", "keep"), error=SignalsError)
    logits = arrays.get("logits")
    if logits is None:
        beside = path.with_name(f"{path.stem}-logits.npy")
        if not beside.is_file():
            raise SignalsError(f"{path}: holds no logits, and {beside.name} is not beside it")
        logits = LogitStore.open(beside)
    return AttackInputs.from_arrays(
        logits=logits, labels=arrays["labels"], keep=arrays["keep"],
        targets=arrays.get("targets"), source=str(path),
    )


class LogProbabilityStore(LogitStore):
    """A :class:`LogitStore` of probabilities, read as their logarithm (see
    :mod:`truthserum.query.probabilities`): log-probabilities are logits up to a constant per
    row, so the softmax of what it returns is the stored probabilities."""

    def read_points(self, start: int, stop: int) -> np.ndarray:
        return to_log_probabilities(super().read_points(start, stop)).astype(np.float32)


def _tolerance(logits: np.ndarray | LogitStore) -> float:
    """:func:`~truthserum.query.probabilities.probability_tolerance` of these logits."""
    return probability_tolerance(logits.shape[-1], logits.dtype)


def probability_range(logits: np.ndarray | LogitStore) -> tuple[float, float, float]:
    """The smallest and largest value of the identity view, and the largest distance of a
    row's sum from 1, read a chunk of points at a time."""
    low, high, off = np.inf, -np.inf, 0.0
    for _, chunk in column_chunks(logits, np.arange(logits.shape[1])):
        first = np.asarray(chunk[:, :, 0, :], dtype=np.float64)
        low, high = min(low, float(first.min())), max(high, float(first.max()))
        off = max(off, float(np.abs(first.sum(axis=-1) - 1.0).max()))
    return low, high, off


def identity_view_is_probabilities(logits: np.ndarray | LogitStore) -> bool:
    """Every row of the identity view lies in [0, 1] and sums to 1 (within a tolerance)."""
    low, high, off = probability_range(logits)
    tolerance = _tolerance(logits)
    return low >= -tolerance and high <= 1.0 + tolerance and off <= tolerance


def read_as_logits(
    inputs: AttackInputs, kind: LogitsKind | str = LogitsKind.AUTO, *, source: str = "signals"
) -> tuple[AttackInputs, bool]:
    """``inputs`` with probabilities replaced by their logarithm, and whether they were
    probabilities: ``auto`` detects them (:func:`identity_view_is_probabilities`), ``logits`` and
    ``probabilities`` say which they are. The attacks' scores on log-probabilities are those
    on the logits of the model that gave them.

    Raises:
        SignalsError: ``kind`` is unknown, or ``probabilities`` where some value lies outside [0, 1].
    """
    try:
        kind = LogitsKind(kind)
    except ValueError:
        raise SignalsError(f"logits_kind must be one of {', '.join(k.value for k in LogitsKind)}, "
                           f"got {kind!r}") from None
    logits = inputs.logits
    if kind is LogitsKind.LOGITS or (kind is LogitsKind.AUTO and not identity_view_is_probabilities(logits)):
        return inputs, False
    if kind is LogitsKind.PROBABILITIES:
        tolerance = _tolerance(logits)
        for _, chunk in column_chunks(logits, np.arange(logits.shape[1])):
            if chunk.min() < -tolerance or chunk.max() > 1.0 + tolerance:
                raise SignalsError(f"{source}: logits_kind is probabilities, but some values lie outside "
                                   f"[0, 1] (from {float(chunk.min()):.4g} to {float(chunk.max()):.4g})")
    if isinstance(logits, LogitStore):
        converted = LogProbabilityStore(path=logits.path, shape=logits.shape, dtype=logits.dtype,
                                        offset=logits.offset)
    else:
        converted = to_log_probabilities(logits)
    return replace(inputs, logits=converted), True
