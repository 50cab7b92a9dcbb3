"""Stage 8, report: text tables of the attribute and untargeted tasks (membership is in
:mod:`truthserum.report`)."""

from __future__ import annotations

from truthserum.metrics import FPR_LEVELS
from truthserum.report import _interval, _percent, _table, format_auc, format_comparison, format_tpr


def _with_interval(value: float | None, interval: list[float] | None) -> str:
    return f"{_percent(value)}{_interval(interval)}"


def format_attribute(results: dict) -> str:
    """Clean against poisoned: guess accuracy on member pairs with intervals, against the base
    rate, then the non-member control."""
    conditions = results["conditions"]
    names = list(conditions)
    sensitive = results["sensitive"]
    attacks = list(next(iter(conditions.values()))["attacks"])
    rows = [
        ["train accuracy", *(_percent(conditions[c]["accuracy"]["train"]) for c in names)],
        ["test accuracy", *(_percent(conditions[c]["accuracy"]["test"]) for c in names)],
        ["poison fit", *(_percent(conditions[c]["poison_fit"]) for c in names)],
    ]
    binary = len(sensitive["values"]) == 2
    for attack in attacks:
        member = {c: conditions[c]["attacks"][attack]["members"] for c in names}
        other = {c: conditions[c]["attacks"][attack]["nonmembers"] for c in names}
        rows.append([f"{attack}: accuracy", *(
            _with_interval(member[c]["accuracy"], member[c]["accuracy_ci"]) for c in names)])
        rows.append(["  balanced accuracy", *(
            _with_interval(member[c]["balanced_accuracy"], member[c]["balanced_accuracy_ci"]) for c in names)])
        if binary:
            rows.append([f"  AUC ({sensitive['values'][1]} vs {sensitive['values'][0]})", *(
                "-" if member[c].get("auc") is None else format_auc(member[c]) for c in names)])
        rows.append(["  non-member accuracy", *(
            _with_interval(other[c]["accuracy"], other[c]["accuracy_ci"]) for c in names)])
    first = conditions[names[0]]["attacks"][attacks[0]]["members"]
    lines = [
        f"attribute inference of '{sensitive['column']}' ({len(sensitive['values'])} values: "
        f"{', '.join(sensitive['values'])}) for {results['targets']} targets",
        "",
        *_table(["", *names], rows),
        "",
        f"accuracy: share of member (model, target) pairs whose value is guessed right ({first['pairs']} "
        "pairs); intervals: 95% bootstrap over targets.",
        f"base rate: always guessing the most common value '{sensitive['majority']}' is right on "
        f"{_with_interval(first['base_rate'], first['base_rate_ci'])} of the member pairs "
        f"(balanced accuracy {100 / len(sensitive['values']):.1f}%).",
        "non-member accuracy: the same guess for targets the model never saw, a control: what it "
        "gets right there comes from the population, not from the person.",
    ]
    poisoned = [c for c in names if conditions[c]["replicas"]]
    for c in poisoned:
        lines.append(
            f"{c}: {conditions[c]['replicas']} mislabeled {'replica' if conditions[c]['replicas'] == 1 else 'replicas'} of every candidate completion, "
            f"{_percent(conditions[c]['poison_fraction'])} of a model's training set."
        )
    return "\n".join(lines)


def _precision(metrics: dict, index: int) -> str:
    found = metrics["precision_at_recall"]
    intervals = found["precision_ci"]
    return _with_interval(found["precision"][index], None if intervals is None else intervals[index])


def _gain_lines(results: dict) -> list[str]:
    """For each poisoned strategy: how many times fewer false discoveries than the clean share,
    for the attack with the highest clean AUC, at each recall level."""
    conditions = results["conditions"]
    names = list(conditions)
    baseline = conditions[names[0]]["attacks"]
    best = max(baseline, key=lambda attack: baseline[attack]["auc"])
    lines = []
    recalls = baseline[best]["precision_at_recall"]["recall"]
    for strategy in names[1:]:
        parts = []
        for i, recall in enumerate(recalls):
            clean = baseline[best]["precision_at_recall"]["precision"][i]
            poisoned = conditions[strategy]["attacks"][best]["precision_at_recall"]["precision"][i]
            ratio = (1 - clean) / (1 - poisoned) if poisoned < 1 else float("inf")
            parts.append(f"at {100 * recall:g}% recall {_percent(clean)} -> {_percent(poisoned)} "
                         f"({ratio:.1f}x fewer false discoveries)")
        lines.append(f"{strategy} against the clean share, {best}: precision " + "; ".join(parts))
    return lines


def format_untargeted(results: dict) -> str:
    """The clean share against each poisoned strategy: accuracy, then each attack's AUC, TPR at
    low FPR and precision at fixed recall, with intervals, on the victims' points."""
    conditions = results["conditions"]
    names = list(conditions)
    attacks = list(next(iter(conditions.values()))["attacks"])
    rows = [
        ["train accuracy", *(_percent(conditions[c]["accuracy"]["train"]) for c in names)],
        ["test accuracy", *(_percent(conditions[c]["accuracy"]["test"]) for c in names)],
    ]
    for attack in attacks:
        metrics = {c: conditions[c]["attacks"][attack] for c in names}
        rows.append([f"{attack} AUC", *(format_auc(metrics[c]) for c in names)])
        for level in FPR_LEVELS[:2]:
            rows.append([f"  TPR @ {100 * level:g}% FPR", *(format_tpr(metrics[c], str(level)) for c in names)])
        for i, recall in enumerate(metrics[names[0]]["precision_at_recall"]["recall"]):
            rows.append([f"  precision @ {100 * recall:g}% recall", *(_precision(metrics[c], i) for c in names)])
    first = conditions[names[0]]["attacks"][attacks[0]]
    lines = [
        f"untargeted poisoning: the adversary holds {results['adversary']} points, the victims "
        f"{results['victims']}; membership inference on every victim point",
        "",
        *_table(["", *names], rows),
        "",
        f"{first['members']} member and {first['nonmembers']} non-member (model, victim point) pairs per "
        "condition; intervals: 95% bootstrap over the victims' points; test accuracy: on the victims' "
        "points a model did not train on. Precision of a random guess: "
        f"{_percent(first['precision_at_recall']['member_share'])}.",
        *_gain_lines(results),
    ]
    if results.get("skipped_attacks"):
        lines.append(f"not run (no population points when every victim point is a target): "
                     f"{', '.join(results['skipped_attacks'])}")
    return "\n".join(lines)


FORMATTERS = {"membership": format_comparison, "attribute": format_attribute, "untargeted": format_untargeted}


def format_results(results: dict) -> str:
    """The table of any task's ``results.json``."""
    return FORMATTERS[results.get("task", "membership")](results)
