"""Sweeps: how attack power grows with the poisoning budget, and with the shadow models.

* Replica sweep: one condition per budget (poisons per target), all sharing the keep matrix,
  the targets and each target's wrong label, trained once each in one run directory. The
  budgets of a plain run keep their names ("clean", "poisoned"), so sweeping the directory of
  a finished run trains only the budgets it lacks. Under ``poison.strategy: adaptive`` the
  adaptive condition is one more column, after the fixed budgets.
* Shadow-model sweep: the signals already in a run directory are scored again with k shadow
  models per target point (k/2 IN, k/2 OUT; see
  :class:`~truthserum.attacks.shadows.ShadowPlan`); nothing is trained again.
"""

from __future__ import annotations

from pathlib import Path

from truthserum.attacks import check_shadow_budget, load_signals
from truthserum.config import RunConfig, Task
from truthserum.errors import ConfigError, SignalsError
from truthserum.report.plots import plot_sweep
from truthserum.store.rundir import RunDirectory, temporary_path, write_json
from truthserum.config.defense import StrategyKind
from truthserum.tasks.membership import ADAPTIVE, condition_for, run_experiment
from truthserum.train.executors import ShardBackend
from truthserum.tasks.stages import Log, attack_metrics, log_to_stderr, stage_report

ALL_SHADOWS = "all"
REPLICA_FILES = ("sweep-replicas.json", "sweep-replicas.png")
SHADOW_FILES = ("sweep-shadow-models.json", "sweep-shadow-models.png")


def parse_counts(
    text: str, *, option: str, allow_all: bool = False, maximum: int | None = None, example: str | None = None,
) -> list[int | None]:
    """``"0,1,2,4"`` -> [0, 1, 2, 4] (sorted, distinct); ``all`` -> None where allowed."""
    values: list[int | None] = []
    for item in (part.strip() for part in text.split(",")):
        if allow_all and item == ALL_SHADOWS:
            values.append(None)
            continue
        try:
            value = int(item)
        except ValueError:
            raise ConfigError(
                f"{option}: {item!r} is not a whole number"
                + (f" or '{ALL_SHADOWS}'" if allow_all else "")
                + f" (give e.g. {option} {example or ('2,4,8,all' if allow_all else '0,1,2,4,8')})"
            ) from None
        if value < 0:
            raise ConfigError(f"{option}: {value} is negative")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{option}: {value} is more than {maximum}")
        values.append(value)
    if not values or len(set(values)) != len(values):
        raise ConfigError(f"{option}: give distinct values separated by commas")
    numbers = sorted(v for v in values if v is not None)
    return [*numbers, *([None] if None in values else [])]


def _summary_point(entry: dict) -> dict:
    """The figures a sweep plots for one condition (or one shadow count)."""
    return {
        name: {key: metrics.get(key) for key in (
            "auc", "auc_ci", "tpr_at_fpr", "tpr_at_fpr_ci", "low_support", "epsilon_lower_bound",
            "confidence", "tuned_offline_a",
        )}
        for name, metrics in entry.items()
    }


def _check_budget(count: int, num_models: int) -> None:
    try:
        check_shadow_budget(count, num_models)
    except SignalsError as exc:
        raise SignalsError(f"--shadow-models {count}: {exc} (or '{ALL_SHADOWS}')") from None


def check_membership(config: RunConfig) -> None:
    """Sweeps vary the targeted poisons or the shadows of the membership task."""
    if config.task is not Task.MEMBERSHIP:
        raise ConfigError(f"--replicas and --shadow-models sweep the membership task, not '{config.task.value}'"
                          + (" (--insertions sweeps an lm config)" if config.task is Task.LM else ""))


def run_replica_sweep(
    config: RunConfig, out_dir: Path, budgets: list[int], *, device: str = "cpu",
    progress: bool = True, log: Log = log_to_stderr, backend: ShardBackend | None = None,
) -> dict:
    """Train every budget once and write ``sweep-replicas.json`` and ``.png``."""
    check_membership(config)
    conditions = [condition_for(config, replicas) for replicas in budgets]
    if config.poison.strategy.kind is StrategyKind.ADAPTIVE:  # its own column, after the fixed budgets
        conditions.append(ADAPTIVE)
    results = run_experiment(
        config, out_dir, device=device, progress=progress, log=log, backend=backend, conditions=conditions,
        results_file="sweep-replicas-results.json", roc_file=None,
    ).to_json()
    points = []
    for condition in conditions:
        entry = results["conditions"][condition.name]
        points.append({
            "replicas": entry["replicas"], "condition": condition.name,
            "label": condition.name if condition.adaptive else str(condition.replicas),
            **({"adaptive": True} if condition.adaptive else {}),  # a column of its own, off the budget axis
            "test_accuracy": entry["accuracy"]["test"], "poison_fraction": entry["poison_fraction"],
            "poison_fit": entry["poison_fit"], "attacks": _summary_point(entry["attacks"]),
        })
    summary = {"sweep": "replicas", "x_label": "poisons per target", "points": points,
               "warnings": results["warnings"], "timing": results["timing"], "config": config.to_json_dict()}
    with RunDirectory.open(out_dir, config, record_scoring=False) as run_dir:  # the run released it
        write_json(run_dir.root / REPLICA_FILES[0], summary)
        plot_sweep(summary, run_dir.root / REPLICA_FILES[1])
        stage_report(run_dir, log)
    return summary


def run_shadow_sweep(
    config: RunConfig, out_dir: Path, counts: list[int | None], *, device: str = "cpu",
    progress: bool = True, log: Log = log_to_stderr, backend: ShardBackend | None = None,
) -> dict:
    """Score the directory's signals again with each shadow-model count; train first only if
    the directory holds no signals yet. Writes ``sweep-shadow-models.json`` and ``.png``."""
    check_membership(config)
    for count in counts:  # before anything is trained
        if count is not None:
            _check_budget(count, config.design.num_models)
    # other scoring settings are used here but not recorded in config.yaml, which describes
    # results.json; the sweep's own json records the config it scored with
    with RunDirectory.open(out_dir, config, record_scoring=False) as run_dir:
        has_signals = any(run_dir.root.glob("signals-*.npz"))
    if not has_signals:  # the run locks the directory itself
        log(f"{out_dir}: no signals yet; running the experiment first")
        run_experiment(config, out_dir, device=device, progress=progress, log=log, backend=backend)
    with RunDirectory.open(out_dir, config, record_scoring=False) as run_dir:
        return _score_with_shadow_counts(config, run_dir, counts, log, progress)


def _score_with_shadow_counts(config: RunConfig, run_dir: RunDirectory, counts: list[int | None], log: Log,
                              progress: bool) -> dict:
    signal_files = sorted(run_dir.root.glob("signals-*.npz"))
    points = []
    for path in signal_files:
        condition = path.stem.removeprefix("signals-")
        inputs = load_signals(path)
        num_models = inputs.keep.shape[0]
        for count in counts:
            if count is not None:
                _check_budget(count, num_models)
            # scores through a scratch file: one attack's scores in memory at a time
            scratch = temporary_path(run_dir.file(f"scores-{condition}-shadows.npz"))
            try:
                metrics, _, _ = attack_metrics(
                    config, inputs, config.attack_options(shadow_models=count), scores_file=scratch,
                    progress=progress, label=f"{condition}, {count or ALL_SHADOWS} shadow models",
                )
            finally:
                scratch.unlink(missing_ok=True)
            shadows = count if count is not None else num_models - 2  # n_in - 1 + n_out - 1
            log(f"{condition}: scored with {count or ALL_SHADOWS} shadow models")
            points.append({"condition": condition, "shadow_models": shadows,
                           "label": str(count or f"{ALL_SHADOWS} ({shadows})"),
                           "attacks": _summary_point(metrics)})
    summary = {"sweep": "shadow-models", "x_label": "shadow models per target point", "points": points,
               "config": config.to_json_dict()}
    write_json(run_dir.root / SHADOW_FILES[0], summary)
    plot_sweep(summary, run_dir.root / SHADOW_FILES[1])
    stage_report(run_dir, log)
    return summary
