"""Plan a membership experiment without training it (``truthserum plan``): the design, the
poisons and every model's training set, exactly as ``truthserum run`` would train them for the
same config, so that the models can be trained elsewhere and their logits attacked with
``truthserum attack --plan`` (:mod:`truthserum.tasks.plan_attack`).

A plan directory holds (:data:`PLAN_FILES` describes each; ``plan.json`` repeats it)::

    plan.json                        what is here, the config, the shapes, the logits layout
    pool.npz                         x (N, ...) float32 features as the models take them, y (N,) labels
    pool.csv                         tables only: the raw rows of the pool, in pool order
    preprocessing.json               tables only: how the raw rows were encoded into x
    design.npz                       keep (M, N) bool, targets (T,): as a run's design.npz
    poisons.npz                      the configured poisons: as a run's poisons.npz
    poisons-<condition>.npz          each condition's poisons: x, y, source (the target each replicates)
    train/<condition>/model-0003.npz indices, x, y, poison: model 3's training set in that condition
    train/<condition>/model-0003.csv tables only: the same rows, raw
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from truthserum import __version__
from truthserum.config import Task, parse_config
from truthserum.config.defense import DefenseKind, StrategyKind
from truthserum.config.tasks import MembershipConfig
from truthserum.data.datasets import Dataset
from truthserum.design import Design
from truthserum.errors import ConfigError, RunDirError
from truthserum.poison.label_flip import PoisonSet, replicate_poisons
from truthserum.store.lock import RunLock
from truthserum.store.rundir import (
    CONFIG_FILE, RunDirectory, holds_only_scratch, read_npz, training_part, write_json, write_npz, write_text,
)
from truthserum.tasks.membership import Condition, conditions_for, stage_poisons
from truthserum.tasks.stages import Log, log_to_stderr, pool_fingerprint, prepare_pool, stage_design

PLAN_FILE = "plan.json"
PLAN_FORMAT = "truthserum-plan"
PLAN_FORMAT_VERSION = 1

PLAN_FILES = {
    "plan.json": "this description: the config, the conditions, the shapes, the seed, the truthserum version "
                 "and the layout of the logits that truthserum attack --plan expects",
    "pool.npz": "x (N, ...) float32: every pool point's features as the models take them (tables: encoded, see "
                "preprocessing.json); y (N,) int64 labels in 0..C-1. The models are queried on x, in this order",
    "pool.csv": "tables only: the raw rows of the pool in pool order (numeric, categorical, sensitive if any, label)",
    "preprocessing.json": "tables only: how each raw row was encoded into pool.npz's x (means, scales, categories)",
    "design.npz": "keep (M, N) bool: model m trains on pool point n; targets (T,) int64: the pool points attacked. "
                  "Equal to the design.npz of truthserum run for this config",
    "poisons.npz": "the configured poisons (x, y, source, target_labels, replicas), equal to truthserum run's "
                   "poisons.npz: replicas mislabeled copies of each target, its wrong label in target_labels",
    "poisons-<condition>.npz": "the poisons every model of the condition trains on: x, y, source (the pool index "
                               "of the target each replicates); empty for clean",
    "train/<condition>/model-<m>.npz": "model m's training set in the condition: indices (the pool rows it "
                                       "trains on, ascending), x and y (those pool rows, then every poison row "
                                       "of the condition in the order of poisons-<condition>.npz), poison (bool: "
                                       "which rows are poisons)",
    "train/<condition>/model-<m>.csv": "tables only: the same rows raw, poisons carrying their wrong label",
}

LOGITS_LAYOUT = (
    "one .npz holding one float array per condition, named after the condition: (M, N, C), or (M, N, A, C) "
    "for A query views of each point (the first the point as it is); entry [m, n] is the output of model m of "
    "that condition (trained on train/<condition>/model-<m>.npz) on pool point n (pool.npz's x[n], in pool "
    "order) over the C classes. Logits or log-probabilities; probabilities are recognised (every row in "
    "[0, 1] summing to 1) and their logarithm attacked"
)


@dataclass(frozen=True)
class Plan:
    """A plan directory, as :func:`write_plan` wrote it and :func:`read_plan` reads it."""

    root: Path
    config: MembershipConfig
    conditions: tuple[Condition, ...]
    num_models: int
    num_points: int
    num_classes: int
    num_targets: int
    feature_shape: tuple[int, ...]
    is_table: bool
    pool_sha256: str = ""  # the pool's fingerprint (tasks.stages.pool_fingerprint)

    def file(self, name: str) -> Path:
        return self.root / name

    def train_file(self, condition: str, model: int, suffix: str = ".npz") -> Path:
        return self.root / "train" / condition / f"model-{model:04d}{suffix}"

    def design(self) -> Design:
        arrays = _read(self.file("design.npz"), {"keep": (self.num_models, self.num_points),
                                                 "targets": (self.num_targets,)})
        return Design(keep=arrays["keep"].astype(bool), targets=arrays["targets"].astype(np.int64))

    def labels(self) -> np.ndarray:
        return _read(self.file("pool.npz"), {"y": (self.num_points,)})["y"].astype(np.int64)

    def poison_labels(self) -> np.ndarray:
        """The wrong label of each target (aligned with the design's targets)."""
        return _read(self.file("poisons.npz"), {"target_labels": (self.num_targets,)})["target_labels"]

    def logits_shapes(self) -> dict[str, list[int]]:
        return {c.name: [self.num_models, self.num_points, self.num_classes] for c in self.conditions}

    def summary(self) -> str:
        """What ``truthserum plan`` prints: what was planned and what to do next."""
        poisons = ", ".join(f"{c.name} ({c.replicas * self.num_targets} poisons)" for c in self.conditions)
        shapes = ", ".join(f"{name} {tuple(shape)}" for name, shape in self.logits_shapes().items())
        return "\n".join([
            f"plan: {self.root}  ({self.num_points} pool points, {self.num_classes} classes; {self.num_models} "
            f"models per condition; {self.num_targets} targets; seed {self.config.seed})",
            f"conditions: {poisons}",
            f"train: model m of each condition on {self.root / 'train'}/<condition>/model-<m>.npz (x, y), then "
            f"query it on every point of {self.root / 'pool.npz'} (x, in order)",
            f"logits: one .npz with an array per condition: {shapes} (or (M, N, A, C)); see {self.file(PLAN_FILE)}",
            f"then:   truthserum attack --plan {self.root} --logits LOGITS.npz",
        ])


def _read(path: Path, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """A plan file with the arrays and shapes it must have."""
    arrays = read_npz(path)
    if arrays is None:
        raise RunDirError(f"{path}: missing or unreadable; run truthserum plan again")
    for key, shape in shapes.items():
        if key not in arrays or arrays[key].shape != shape:
            raise RunDirError(f"{path}: no array {key} of shape {shape}; run truthserum plan again")
    return arrays


def _recorded(root: Path) -> dict[str, Any] | None:
    if not (root / PLAN_FILE).is_file():  # a pipe would block the read
        return None
    try:
        data = json.loads((root / PLAN_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == PLAN_FORMAT else None


def _check_plan_dir(root: Path, config: MembershipConfig) -> None:
    """A plan may go where nothing is, into an empty directory, or over an earlier plan of a
    config that trains the same (the attack settings may differ)."""
    if root.exists() and not root.is_dir():
        raise RunDirError(f"{root}: exists and is not a directory; use another out_dir")
    if holds_only_scratch(root):
        return
    if (root / CONFIG_FILE).exists():
        raise RunDirError(f"{root}: is a truthserum run directory, not a plan; use another out_dir")
    recorded = _recorded(root)
    if recorded is None:
        raise RunDirError(f"{root}: not empty and not an earlier plan (no readable {PLAN_FILE}); use another out_dir")
    if training_part(recorded.get("config") or {}) != training_part(config.to_json_dict()):
        raise RunDirError(f"{root}: an earlier plan of another config; use another out_dir or delete it")


def _csv_text(table: Any, rows: np.ndarray, labels: list[str] | None = None) -> str:
    """The raw rows ``rows`` of a table as CSV (numeric, categorical, sensitive if any, label),
    ``labels`` replacing the label column when given."""
    columns: list[tuple[str, np.ndarray]] = [*table.numeric.items(), *table.categorical.items()]
    sensitive = getattr(table.columns, "sensitive", None)
    if sensitive is not None and table.sensitive is not None:
        columns.append((sensitive, table.sensitive))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([name for name, _ in columns] + [table.columns.label])
    label_column = table.label[rows] if labels is None else labels
    values = [values[rows] for _, values in columns]
    for i in range(len(rows)):
        writer.writerow([repr(float(v[i])) if v.dtype.kind == "f" else str(v[i]) for v in values]
                        + [str(label_column[i])])
    return buffer.getvalue()


def _write_condition(plan: Plan, pool: Dataset, design: Design, condition: Condition, poisons: PoisonSet) -> None:
    """Every model's training set in ``condition``, in the order a run trains it: the model's
    pool rows (ascending), then every poison row (see :func:`truthserum.train.shard`)."""
    write_npz(plan.file(f"poisons-{condition.name}.npz"), {"x": poisons.x, "y": poisons.y, "source": poisons.source})
    poison_labels = None
    if pool.table is not None and pool.preprocessing is not None:
        categories = pool.preprocessing.label.categories
        poison_labels = [categories[int(label)] for label in poisons.y]
    for m in range(plan.num_models):
        indices = np.nonzero(design.keep[m])[0].astype(np.int64)
        write_npz(plan.train_file(condition.name, m), {
            "indices": indices, "x": np.concatenate([pool.x[indices], poisons.x]),
            "y": np.concatenate([pool.y[indices], poisons.y]).astype(np.int64),
            "poison": np.r_[np.zeros(indices.size, bool), np.ones(poisons.total, bool)],
        })
        if poison_labels is not None:
            rows = np.r_[indices, poisons.source].astype(np.int64)
            labels = [str(label) for label in pool.table.label[indices]] + poison_labels
            write_text(plan.train_file(condition.name, m, ".csv"), _csv_text(pool.table, rows, labels))


def _description(plan: Plan, *, complete: bool) -> dict[str, Any]:
    files = {name: text for name, text in PLAN_FILES.items()
             if plan.is_table or name not in ("pool.csv", "preprocessing.json", "train/<condition>/model-<m>.csv")}
    return {
        "format": PLAN_FORMAT, "format_version": PLAN_FORMAT_VERSION, "truthserum_version": __version__,
        "complete": complete, "seed": plan.config.seed, "pool_sha256": plan.pool_sha256,
        "conditions": [{"name": c.name, "replicas": c.replicas, "poisons": c.replicas * plan.num_targets}
                       for c in plan.conditions],
        "shapes": {"models": plan.num_models, "pool_points": plan.num_points, "classes": plan.num_classes,
                   "targets": plan.num_targets, "features": list(plan.feature_shape)},
        "files": files,
        "logits": {"layout": LOGITS_LAYOUT, "arrays": plan.logits_shapes(),
                   "attack": f"truthserum attack --plan {plan.root} --logits LOGITS.npz"},
        "config": plan.config.to_json_dict(),
    }


def write_plan(*, config: MembershipConfig, out_dir: Path, log: Log = log_to_stderr) -> Plan:
    """Write what ``truthserum run`` would train for ``config``, without training it.

    The design and the poisons come from the run's own stages with the config's seed, so a
    plan equals the design.npz and poisons.npz of a run of the same config, and each model's
    training set is the one that run trains it on.

    Args:
        config: a membership config.
        out_dir: the plan directory: created, or an earlier plan of a config that trains the same.
        log: where stage warnings are said.

    Raises:
        ConfigError: a config of another task.
        RunDirError: ``out_dir`` holds something else (nothing is written then).
        DataError: the data cannot be used (found before anything is written).
    """
    if getattr(config, "task", None) is not Task.MEMBERSHIP:
        task = getattr(getattr(config, "task", None), "value", config)
        raise ConfigError(f"truthserum plan is for task 'membership' (targeted poisons), not '{task}'; "
                          "run that task with truthserum run")
    if config.defense.kind is not DefenseKind.NONE or config.poison.strategy.kind is not StrategyKind.EXACT:
        raise ConfigError("truthserum plan writes exact replicas and every model's whole training set, for a pipeline "
                          "of your own (apply your defense there); drop defense and poison.strategy from the config, "
                          "or run it with truthserum run")
    root = Path(out_dir)
    _check_plan_dir(root, config)
    pool = prepare_pool(config)  # checks the data and the model before anything is written
    plan = Plan(
        root=root, config=config, conditions=tuple(conditions_for(config)), num_models=config.design.num_models,
        num_points=pool.num_points, num_classes=pool.num_classes, num_targets=config.design.num_targets,
        feature_shape=pool.feature_shape, is_table=pool.table is not None, pool_sha256=pool_fingerprint(pool),
    )
    earlier = _recorded(root)
    if earlier is not None and earlier.get("pool_sha256") != plan.pool_sha256:
        # its models may have been trained on the earlier data: a plan is never rewritten over them
        raise RunDirError(f"{root}: an earlier plan of other data ({config.data.source.value} changed since); "
                          "use another out_dir or delete it")
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = RunLock(root).acquire()  # one writer at a time, as for a run directory
        lock.announce()
    except OSError as exc:
        raise RunDirError(f"{root}: cannot write ({exc.strerror or exc})") from None
    with RunDirectory(root, locks=(lock,)) as run_dir:
        _write_plan_files(plan, pool, run_dir, log)
    return plan


def _write_plan_files(plan: Plan, pool: Dataset, run_dir: RunDirectory, log: Log) -> None:
    config = plan.config
    write_json(plan.file(PLAN_FILE), _description(plan, complete=False))  # an unfinished plan is rewritten
    design = stage_design(run_dir, config, pool, log)
    poisons = stage_poisons(run_dir, config, pool, design, log)
    write_npz(plan.file("pool.npz"), {"x": pool.x, "y": pool.y.astype(np.int64)})
    if pool.table is not None and pool.preprocessing is not None:
        write_text(plan.file("pool.csv"), _csv_text(pool.table, np.arange(pool.num_points)))
        write_json(plan.file("preprocessing.json"), pool.preprocessing.to_json_dict())
    for condition in plan.conditions:
        # as MembershipRunner.run makes them: each target's wrong label, `replicas` copies
        condition_poisons = replicate_poisons(x=pool.x, targets=design.targets, target_labels=poisons.target_labels,
                                              replicas=condition.replicas)
        _write_condition(plan, pool, design, condition, condition_poisons)
    write_json(plan.file(PLAN_FILE), _description(plan, complete=True))


def read_plan(plan_dir: Path) -> Plan:
    """The plan in ``plan_dir`` (its plan.json; the arrays are read when asked for).

    Raises:
        RunDirError: no finished plan there, or one this version cannot read.
    """
    root = Path(plan_dir)
    if not root.is_dir():
        raise RunDirError(f"{root}: no such plan directory; write one with truthserum plan")
    recorded = _recorded(root)
    if recorded is None:
        raise RunDirError(f"{root}: not a plan directory (no readable {PLAN_FILE}); write one with truthserum plan")
    if recorded.get("format_version") != PLAN_FORMAT_VERSION:
        raise RunDirError(f"{root}: a plan of format {recorded.get('format_version')!r}; this truthserum reads "
                          f"{PLAN_FORMAT_VERSION}: write it again with truthserum plan")
    if not recorded.get("complete"):
        raise RunDirError(f"{root}: an unfinished plan; run truthserum plan again")
    try:
        config = parse_config(recorded["config"], source=str(root / PLAN_FILE))
        shapes = recorded["shapes"]
        conditions = tuple(Condition(str(c["name"]), int(c["replicas"])) for c in recorded["conditions"])
        return Plan(
            root=root, config=config, conditions=conditions, num_models=int(shapes["models"]),
            num_points=int(shapes["pool_points"]), num_classes=int(shapes["classes"]),
            num_targets=int(shapes["targets"]), feature_shape=tuple(int(n) for n in shapes["features"]),
            is_table="pool.csv" in recorded.get("files", {}), pool_sha256=str(recorded.get("pool_sha256", "")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RunDirError(f"{root / PLAN_FILE}: damaged ({exc}); run truthserum plan again") from None
