"""Stage 8, report: the untargeted task's table (the clean share against each poisoned
strategy: AUC, TPR at low FPR and precision at fixed recall on the victims' points)."""

from __future__ import annotations

from truthserum.metrics.precision import false_positive_ratio
from truthserum.metrics.roc import FPR_LEVELS
from truthserum.report.blocks import Block, Table, render_text
from truthserum.report.text import (
    LOW_SUPPORT_MARK, accuracy_rows, bootstrap_note, percent, roc_rows, with_interval,
)

VICTIMS = "the victims' points"


def _precision(metrics: dict, index: int) -> str:
    found = metrics["precision_at_recall"]
    intervals = found["precision_ci"]
    return with_interval(found["precision"][index], None if intervals is None else intervals[index])


def _best(attacks: dict, index: int) -> tuple[str, float]:
    """The attack with the highest precision at the recall level ``index``."""
    name = max(attacks, key=lambda attack: attacks[attack]["precision_at_recall"]["precision"][index])
    return name, attacks[name]["precision_at_recall"]["precision"][index]


LOWEST_FPR = FPR_LEVELS[0]


def _best_tpr(attacks: dict) -> tuple[str, float]:
    """The attack with the highest TPR at the lowest FPR level."""
    level = str(LOWEST_FPR)
    name = max(attacks, key=lambda attack: attacks[attack]["tpr_at_fpr"][level])
    return name, attacks[name]["tpr_at_fpr"][level]


def _change(clean: float, poisoned: float) -> str:
    """How the false positives at equal recall change, in words (either side may have none)."""
    if clean >= 1.0 and poisoned >= 1.0:
        return "no false positives either way"
    if poisoned >= 1.0:
        return "no false positives left"
    if clean >= 1.0:
        return "false positives where the clean share had none"
    ratio = false_positive_ratio(clean, poisoned)
    return f"{ratio:.1f}x fewer false positives" if ratio >= 1 else f"{1 / ratio:.1f}x more false positives"


def _gain_lines(results: dict) -> list[str]:
    """For each poisoned strategy and recall level: the best attack's precision against the best
    attack's on the clean share, and how many times fewer false positives that is; then the
    best TPR at the lowest FPR level against the clean share's best."""
    conditions = results["conditions"]
    names = list(conditions)
    baseline = conditions[names[0]]["attacks"]
    recalls = next(iter(baseline.values()))["precision_at_recall"]["recall"]
    lines = []
    for strategy in names[1:]:
        parts = []
        for i, recall in enumerate(recalls):
            clean_attack, clean = _best(baseline, i)
            attack, poisoned = _best(conditions[strategy]["attacks"], i)
            parts.append(f"at {100 * recall:g}% recall {percent(clean)} ({clean_attack}) -> {percent(poisoned)} "
                         f"({attack}), {_change(clean, poisoned)}")
        clean_attack, clean = _best_tpr(baseline)
        attack, poisoned = _best_tpr(conditions[strategy]["attacks"])
        parts.append(f"TPR at {100 * LOWEST_FPR:g}% FPR {percent(clean)} ({clean_attack}) -> "
                     f"{percent(poisoned)} ({attack})")
        lines.append(f"{strategy} against the clean share, best attack each: " + "; ".join(parts))
    return lines


def format_untargeted(results: dict) -> str:
    """The clean share against each poisoned strategy: accuracy, then each attack's AUC, TPR at
    low FPR and precision at fixed recall, with intervals, on the victims' points."""
    return render_text(untargeted_blocks(results))


def untargeted_blocks(results: dict) -> list[Block]:
    """:func:`format_untargeted` as blocks."""
    conditions = results["conditions"]
    names = list(conditions)
    attacks = list(next(iter(conditions.values()))["attacks"])
    rows = accuracy_rows(conditions)
    for attack in attacks:
        metrics = {c: conditions[c]["attacks"][attack] for c in names}
        rows.extend(roc_rows(metrics, attack, FPR_LEVELS[:2]))
        for i, recall in enumerate(metrics[names[0]]["precision_at_recall"]["recall"]):
            rows.append([f"  precision @ {100 * recall:g}% recall", *(_precision(metrics[c], i) for c in names)])
    first = conditions[names[0]]["attacks"][attacks[0]]
    lines: list[Block] = [
        f"untargeted poisoning: the adversary holds {results['adversary']} points, the victims "
        f"{results['victims']}; membership inference on every victim point",
        "",
        Table(["", *names], rows, caption="Every strategy, every attack, on the victims' points"),
        "",
        f"{first['members']} member and {first['nonmembers']} non-member (model, victim point) pairs per "
        f"condition; {bootstrap_note(results, VICTIMS)}; test accuracy: on the victims' "
        "points a model did not train on; precision of a random guess: "
        f"{percent(first['precision_at_recall']['member_share'])}.",
        f"{LOW_SUPPORT_MARK} fewer than 10 non-members can be false positives at that level.",
        *_gain_lines(results),
    ]
    if results.get("skipped_attacks"):
        lines.append(f"not run (no population points when every victim point is a target): "
                     f"{', '.join(results['skipped_attacks'])}")
    return lines
