"""What ``truthserum attack`` shares between a signals file and a plan's logits: the attacks
asked for, the output directory it may write, probabilities read as logits, target points
without the shadow models an attack needs (refused, or dropped on request), and one condition
scored by every chosen attack and measured.

An output directory of ``truthserum attack`` holds ``results.json`` (with an ``attacked``
entry, which is how a later attack knows it may overwrite it), ``roc.png`` and the scores.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from truthserum.attacks import AttackInputs, AttackOptions, Scoring, get_attack, registered_attacks
from truthserum.attacks.registry import Attack
from truthserum.attacks.inputs import LogitsKind, read_as_logits
from truthserum.attacks.lira import first_few
from truthserum.attacks.shadows import ShadowNeed, lacking_shadows
from truthserum.config.sections import MetricsConfig
from truthserum.config.tasks import MembershipConfig
from truthserum.errors import RunDirError, SignalsError
from truthserum.metrics.accuracy import accuracy, predictions
from truthserum.metrics.roc import RocCurve
from truthserum.store.logits import LogitStore
from truthserum.store.rundir import CONFIG_FILE, commit_temporary, temporary_path, write_json
from truthserum.tasks.results import RunResults
from truthserum.tasks.stages import Log, attack_metrics, record_warning

ALL = "all"
OUTPUT_MARK = "attacked"  # the entry of results.json that says truthserum attack wrote it
RESULTS_FILE, ROC_FILE = "results.json", "roc.png"
PLAN_FILE = "plan.json"

def resolve_attacks(attacks: str | Sequence[str] | None, default: Iterable[str] | None = None) -> tuple[str, ...]:
    """The attacks to run, in order, each once: ``"all"`` (alone or in the list) means every
    registered attack; None means ``default`` (every registered attack when None).

    Raises:
        SignalsError: an unknown attack name.
    """
    if attacks is None:
        names = list(default) if default is not None else [ALL]
    else:
        names = [attacks] if isinstance(attacks, str) else list(attacks)
    if ALL in names or not names:
        return registered_attacks()
    return tuple(get_attack(name).name for name in dict.fromkeys(names))


def without_population(
    names: tuple[str, ...], attacks: str | Sequence[str] | None, inputs: AttackInputs, *, source: str,
    warnings: list[str], log: Log,
) -> tuple[str, ...]:
    """``names`` less the attacks that compare targets with other points (RMIA) when every
    point is a target and the attacks were not named one by one (``"all"`` or the default):
    then they are left out with a warning, where a named one is refused when it runs."""
    named = attacks is not None and ALL not in ([attacks] if isinstance(attacks, str) else list(attacks))
    if named or inputs.targets.size < inputs.labels.shape[0]:
        return names
    left_out = [name for name in names if get_attack(name).needs_population]
    if left_out:
        record_warning(warnings, log, f"{source}: every point is a target, so {', '.join(left_out)} (which compare "
                                      "targets with other points) did not run; name fewer targets to run them")
    kept = tuple(name for name in names if name not in left_out)
    if not kept:
        raise SignalsError(f"{source}: every point is a target, and every chosen attack needs other points")
    return kept


def _is_attack_output(directory: Path) -> bool:
    if not (directory / RESULTS_FILE).is_file():  # a pipe there would block the read
        return False
    try:
        data = json.loads((directory / RESULTS_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and OUTPUT_MARK in data


def check_out_dir(
    out: Path, *, writes: Sequence[str], inputs: Sequence[Path] = (), plan_dir: Path | None = None,
) -> None:
    """Refuse an output directory whose files are not ``truthserum attack``'s own: nothing is
    written yet. A missing or empty directory, or an earlier attack output, may be used; so may
    the plan directory ``plan_dir``, whose own files are never written.

    Raises:
        RunDirError: ``out`` is a file, a run or plan directory, a directory of other files, or
            one of the files it would write is an input (``inputs``).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out}: exists and is not a directory; out_dir names a directory that receives "
                          f"{', '.join(writes)}")
    for name in writes:
        if any((out / name).resolve() == Path(path).resolve() for path in inputs):
            raise RunDirError(f"{out / name}: is an input of this attack and would be overwritten; use another out_dir")
    if not out.is_dir():
        return
    if (out / CONFIG_FILE).exists():
        raise RunDirError(f"{out}: is a truthserum run directory (it holds {CONFIG_FILE}), whose results are the "
                          "run's own; use another out_dir")
    ours = _is_attack_output(out)
    if plan_dir is not None and out.resolve() == Path(plan_dir).resolve():
        present = [name for name in writes if (out / name).exists()]
        if present and not ours:
            raise RunDirError(f"{out}: holds {', '.join(present)}, not written by truthserum attack; move them "
                              "or use another out_dir")
        return
    if (out / PLAN_FILE).exists():
        raise RunDirError(f"{out}: is a truthserum plan directory; use another out_dir")
    entries = sorted(p.name for p in out.iterdir() if not p.name.startswith(".tmp-"))
    if entries and not ours:
        raise RunDirError(f"{out}: not empty (it holds {', '.join(entries[:3])}{', ...' if len(entries) > 3 else ''}) "
                          "and not an earlier output of truthserum attack; use another out_dir")


def make_out_dir(out: Path) -> None:
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"{out}: cannot create the output directory ({exc.strerror or exc})") from None


def as_logits(inputs: AttackInputs, kind: LogitsKind | str, *, source: str, warnings: list[str],
              log: Log) -> tuple[AttackInputs, bool]:
    """:func:`~truthserum.attacks.inputs.read_as_logits`, with a warning when ``auto`` found
    probabilities."""
    converted, probabilities = read_as_logits(inputs, kind, source=source)
    if probabilities and LogitsKind(kind) is LogitsKind.AUTO:
        record_warning(warnings, log, (
            f"{source}: these look like probabilities, not logits (every row of the identity view lies in "
            "[0, 1] and sums to 1); attacking their logarithm, which gives the scores of the logits (set "
            "logits_kind logits if they are logits)"))
    return converted, probabilities


def _strictest(attacks: Sequence[str], population: bool) -> tuple[ShadowNeed | None, list[str]]:
    """The strictest need of ``attacks`` (of their targets' shadows, or their population's) and
    the attacks that have one; a registered attack declares its own."""
    def need(attack: Attack) -> ShadowNeed | None:
        return attack.population_shadows if population else attack.target_shadows

    found = [(needed, name) for name in attacks if (needed := need(get_attack(name))) is not None]
    if not found:
        return None, []
    return ShadowNeed.strictest(need for need, _ in found), [name for _, name in found]


@dataclass(frozen=True)
class Support:
    """The inputs to score once points without the shadows the attacks need are dropped.

    Attributes:
        inputs: what the attacks score (fewer points when some were dropped and RMIA runs).
        targets: pool indices of the scored targets, in the order of the scores.
        dropped_targets: pool indices of the targets left out.
        dropped_population: pool indices of non-targets left out of RMIA's population.
    """

    inputs: AttackInputs
    targets: np.ndarray
    dropped_targets: np.ndarray
    dropped_population: np.ndarray

    def warning(self, source: str) -> str | None:
        if not self.dropped_targets.size and not self.dropped_population.size:
            return None
        total = self.targets.size + self.dropped_targets.size
        parts = []
        if self.dropped_targets.size:
            parts.append(f"dropped {self.dropped_targets.size} of {total} target points with too few shadow "
                         f"models (points {first_few(self.dropped_targets)})")
        if self.dropped_population.size:
            parts.append(f"left {self.dropped_population.size} points with too few reference models out of "
                         f"RMIA's population (points {first_few(self.dropped_population)})")
        return f"{source}: skip_unsupported: {'; '.join(parts)}"


def supported_inputs(inputs: AttackInputs, attacks: Sequence[str], options: AttackOptions, *, skip: bool,
                     source: str) -> Support:
    """Check that every target point (and RMIA population point) has the shadow models the
    chosen attacks need for every target model; without ``skip`` refuse the lacking points
    with their count and the first few, with it drop them.

    Raises:
        SignalsError: lacking points without ``skip``, or no target point left with it.
    """
    count = options.shadow_models
    keep, targets = inputs.keep, inputs.targets
    target_need, target_attacks = _strictest(attacks, population=False)
    population_need, population_attacks = _strictest(attacks, population=True)
    nothing = np.zeros(0, dtype=np.int64)
    bad_targets = nothing
    if target_need is not None:
        bad_targets = targets[lacking_shadows(keep, targets, count=count, needs=target_need)]
    bad_population = nothing
    if population_need is not None:
        others = np.setdiff1d(np.arange(keep.shape[1]), targets)
        candidates = others if skip else Scoring(inputs, options).population
        bad_population = candidates[lacking_shadows(keep, candidates, count=count, needs=population_need)]
    if not skip and (bad_targets.size or bad_population.size):
        problems = []
        if bad_targets.size:
            problems.append(
                f"{bad_targets.size} of {targets.size} target points have too few shadow models for "
                f"{', '.join(target_attacks)}: each needs {target_need.describe(count)}; points "
                f"{first_few(bad_targets)}")
        if bad_population.size:
            problems.append(
                f"{bad_population.size} population points (non-targets) have too few reference models for "
                f"{', '.join(population_attacks)}: each needs {population_need.describe(count)}; points "
                f"{first_few(bad_population)}")
        raise SignalsError(f"{source}: {'; '.join(problems)}; pass skip_unsupported=True to drop them")
    if not bad_targets.size and not bad_population.size:
        return Support(inputs, targets, nothing, nothing)
    kept_targets = targets[~np.isin(targets, bad_targets)]
    if not kept_targets.size:
        raise SignalsError(f"{source}: all {targets.size} target points have too few shadow models for "
                           f"{', '.join(target_attacks)} (each needs {target_need.describe(count)}); "
                           "nothing is left to attack")
    if population_need is None:  # the dropped targets need not leave the pool: no attack compares with it
        return Support(replace(inputs, targets=kept_targets), kept_targets, bad_targets, bad_population)
    kept = np.setdiff1d(np.arange(keep.shape[1]), np.r_[bad_targets, bad_population])
    logits = inputs.logits[:, kept] if isinstance(inputs.logits, LogitStore) else np.asarray(inputs.logits)[:, kept]
    subset = AttackInputs(logits=logits, labels=inputs.labels[kept], keep=keep[:, kept],
                          targets=np.searchsorted(kept, kept_targets))
    return Support(subset, kept_targets, bad_targets, bad_population)


def model_accuracy(logits: np.ndarray | LogitStore, labels: np.ndarray, keep: np.ndarray) -> dict[str, float | None]:
    """Train and test accuracy as a run measures them (:func:`~truthserum.metrics.accuracy.accuracy`);
    a model without members (or non-members) sits out of that mean, None when no model has any."""
    has = keep.any(axis=1), (~keep).any(axis=1)
    if has[0].all() and has[1].all():
        return accuracy(logits, labels, keep)
    correct = predictions(logits) == labels[None, :]
    result: dict[str, float | None] = {}
    for split, mask, present in (("train", keep, has[0]), ("test", ~keep, has[1])):
        rates = (correct & mask)[present].sum(axis=1) / mask[present].sum(axis=1)
        result[split] = float(rates.mean()) if present.any() else None
    return result


def scoring_config(attacks: Sequence[str], options: AttackOptions, *, metrics: MetricsConfig | None = None,
                   base: MembershipConfig | None = None) -> MembershipConfig:
    """The config :func:`~truthserum.tasks.stages.attack_metrics` measures with: ``base`` (or
    the defaults) with these attacks, the options' seed (it seeds the bootstrap) and RMIA's."""
    update: dict[str, Any] = {"attacks": tuple(attacks), "seed": options.seed, "rmia": options.rmia}
    if metrics is not None:
        update["metrics"] = metrics
    if base is None:
        return MembershipConfig(**update)
    return base.model_copy(update=update)


def measure(config: MembershipConfig, support: Support, options: AttackOptions, *, scores_file: Path | None,
            label: str = "attacks") -> tuple[dict[str, dict], dict[str, RocCurve], dict[str, np.ndarray]]:
    """Score and measure one condition: :func:`~truthserum.tasks.stages.attack_metrics`. With
    ``scores_file`` every attack's ``(M, T)`` scores, ``members`` and ``targets`` (pool indices)
    are written there, one attack's scores in memory at a time. A bar named ``label`` shows the
    attacks' progress on a terminal."""
    if scores_file is None:
        return attack_metrics(config, support.inputs, options, progress=True, label=label)
    temporary = temporary_path(scores_file)
    try:
        metrics, curves, kept = attack_metrics(config, support.inputs, options, scores_file=temporary,
                                               progress=True, label=label)
        with zipfile.ZipFile(temporary, "a", allowZip64=True) as archive, \
                archive.open("targets.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array(member, support.targets.astype(np.int64), allow_pickle=False)
        commit_temporary(temporary, Path(scores_file))
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return metrics, curves, kept


def settings_json(attacks: Sequence[str], options: AttackOptions, config: MembershipConfig, **extra: Any) -> dict:
    """The ``attacked`` entry of results.json: what was attacked, and how."""
    return {
        **extra, "attacks": list(attacks), "shadow_models": options.shadow_models, "seed": options.seed,
        "rmia": options.rmia.model_dump(mode="json"), "metrics": config.metrics.model_dump(mode="json"),
    }


def write_outputs(out_dir: Path, results: RunResults, curves: dict[tuple[str, str], RocCurve], log: Log) -> None:
    """``results.json``, then ``roc.png`` (every condition's attacks) and ``report.html``, each
    written atomically."""
    from truthserum.report.plots import plot_roc  # matplotlib: only when there is a plot to draw

    from truthserum.report.html import report_or_warning

    write_json(Path(out_dir) / RESULTS_FILE, results.to_json())
    plot_roc(curves, Path(out_dir) / ROC_FILE, run_name=Path(out_dir).resolve().name)
    report_or_warning(Path(out_dir), log=log)
