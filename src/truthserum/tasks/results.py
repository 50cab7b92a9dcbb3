"""What a run returns: typed, frozen results that write ``results.json`` and read it back.

``results.json`` keeps the keys it has always had, so a run directory written before these
types existed loads with :meth:`RunResults.from_json`. A membership-style attack (every task
but attribute inference and language models) reads into :class:`AttackResult`, whose
:class:`~truthserum.metrics.attack.AttackMetrics` keys ``tpr_at_fpr`` by float FPR levels;
what a task measures beyond that stays as written, in ``measurements`` and ``details``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from truthserum.errors import RunDirError
from truthserum.metrics.attack import AttackMetrics
from truthserum.metrics.guidance import Guidance

# The keys every task writes around its own; a task's other top-level keys are its details.
_COMMON_KEYS = ("task", "config", "conditions", "timing", "device", "warnings")
# Tasks whose conditions hold membership attacks measured by an ROC.
_ROC_TASKS = ("membership", "untargeted", "defenses")


def _frozen(value: Any) -> Any:
    """A read-only view of a JSON value (mappings become proxies, lists tuples)."""
    if isinstance(value, Mapping):
        return MappingProxyType({key: _frozen(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_frozen(item) for item in value)
    return value


def _thawed(value: Any) -> Any:
    """The plain JSON form of a value made by :func:`_frozen`."""
    if isinstance(value, Mapping):
        return {key: _thawed(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [_thawed(item) for item in value]
    return value


@dataclass(frozen=True)
class AttackResult:
    """One attack in one condition: its ROC metrics and what else was measured or chosen
    (RMIA's tuned ``a``, the untargeted task's precision at recall)."""

    metrics: AttackMetrics
    details: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def tpr_at_fpr(self) -> dict[float, float]:
        return self.metrics.tpr_at_fpr

    @property
    def auc(self) -> float:
        return self.metrics.auc

    def to_json(self) -> dict[str, Any]:
        return self.metrics.to_dict() | _thawed(self.details)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AttackResult:
        metrics = AttackMetrics.from_dict(data)
        extra = {key: value for key, value in data.items() if key not in AttackMetrics.DICT_KEYS}
        return cls(metrics=metrics, details=_frozen(extra))


@dataclass(frozen=True)
class ConditionResults:
    """One training condition (clean, poisoned, a budget, an adversary's strategy).

    ``attacks`` holds :class:`AttackResult` for membership-style attacks and the written
    mapping otherwise (attribute inference: guess accuracy on member and non-member pairs), or
    is None where the task measures no attacks (language models: exposure and extraction are
    in ``measurements``); ``measurements`` is everything else the task wrote for the condition.
    """

    name: str
    attacks: Mapping[str, AttackResult | Mapping[str, Any]] | None
    measurements: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        entry = _thawed(self.measurements)
        if self.attacks is not None:  # last, where every task writes them
            entry["attacks"] = {
                name: attack.to_json() if isinstance(attack, AttackResult) else _thawed(attack)
                for name, attack in self.attacks.items()
            }
        return entry

    @classmethod
    def from_json(cls, name: str, data: Mapping[str, Any], *, roc_attacks: bool) -> ConditionResults:
        attacks = None
        if "attacks" in data:
            attacks = MappingProxyType({
                attack: AttackResult.from_json(entry) if roc_attacks else _frozen(entry)
                for attack, entry in data["attacks"].items()
            })
        measurements = {key: value for key, value in data.items() if key != "attacks"}
        return cls(name=name, attacks=attacks, measurements=_frozen(measurements))


@dataclass(frozen=True)
class Timing:
    total_seconds: float
    train_seconds: float | None = None  # None: the task does not count it apart (lm)

    def to_json(self) -> dict[str, float]:
        timing = {} if self.train_seconds is None else {"train_seconds": self.train_seconds}
        return timing | {"total_seconds": self.total_seconds}


@dataclass(frozen=True)
class RunResults:
    """A finished run: what ``run_task`` returns and ``results.json`` holds.

    ``details`` are the task's own top-level entries (membership: ``poison``, ``guidance``; attribute:
    ``sensitive``, ``targets``; untargeted: ``victims``, ``adversary``; lm: ``corpus``,
    ``per_canary``, ...), as written.
    """

    task: str
    config: Mapping[str, Any]
    conditions: Mapping[str, ConditionResults]
    timing: Timing
    device: str
    warnings: tuple[str, ...] = ()
    details: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def attack(self, condition: str, attack: str) -> AttackResult:
        """One attack's result in one condition (membership-style tasks)."""
        result = (self.conditions[condition].attacks or {})[attack]
        if not isinstance(result, AttackResult):
            raise TypeError(f"task '{self.task}' measures attack '{attack}' without an ROC; see its attacks mapping")
        return result

    @property
    def guidance(self) -> Guidance | None:
        """The membership task's judgement of its amplification, with the findings and config
        changes when it is small (:mod:`truthserum.metrics.guidance`); None for other tasks,
        runs without poisons, and results.json written before the guidance existed."""
        data = self.details.get("guidance")
        return None if data is None else Guidance.from_json(data)

    def summary(self) -> str:
        """The printed table of this run (what ``truthserum run`` shows)."""
        from truthserum.report import format_results  # the report is only needed here

        return format_results(self.to_json())

    def to_json(self) -> dict[str, Any]:
        """The contents of ``results.json``."""
        return {
            "task": self.task,
            "config": _thawed(self.config),
            **_thawed(self.details),
            "conditions": {name: condition.to_json() for name, condition in self.conditions.items()},
            "timing": self.timing.to_json(),
            "device": self.device,
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunResults:
        """Read ``results.json`` contents (one written before tasks existed is membership)."""
        task = data.get("task", "membership")
        roc_attacks = task in _ROC_TASKS
        timing = data.get("timing", {})
        return cls(
            task=task,
            config=_frozen(data.get("config", {})),
            conditions=MappingProxyType({
                name: ConditionResults.from_json(name, entry, roc_attacks=roc_attacks)
                for name, entry in data.get("conditions", {}).items()
            }),
            timing=Timing(total_seconds=timing.get("total_seconds", 0.0), train_seconds=timing.get("train_seconds")),
            device=data.get("device", "cpu"),
            warnings=tuple(data.get("warnings", ())),
            details=_frozen({key: value for key, value in data.items() if key not in _COMMON_KEYS}),
        )

    @classmethod
    def read(cls, path: Path) -> RunResults:
        """Read a run's ``results.json`` (or the file at ``path``).

        Raises:
            RunDirError: the file is missing or not a results file.
        """
        path = Path(path)
        if path.is_dir():
            path = path / "results.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunDirError(f"{path}: no such results file; run the experiment first") from None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise RunDirError(f"{path}: unreadable results ({exc})") from None
        if not isinstance(data, dict) or "conditions" not in data:
            raise RunDirError(f"{path}: not a truthserum results file")
        return cls.from_json(data)
