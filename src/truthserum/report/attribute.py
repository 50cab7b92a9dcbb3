"""Stage 8, report: the attribute task's table (guess accuracy on member pairs against the
base rate, then the non-member control)."""

from __future__ import annotations

from truthserum.report.blocks import Block, Table, render_text
from truthserum.report.text import (
    accuracy_rows, bootstrap_note, format_auc, percent, with_interval,
)


def format_attribute(results: dict) -> str:
    """Clean against poisoned: guess accuracy on member pairs with intervals, against the base
    rate, then the non-member control."""
    return render_text(attribute_blocks(results))


def attribute_blocks(results: dict) -> list[Block]:
    """:func:`format_attribute` as blocks."""
    conditions = results["conditions"]
    names = list(conditions)
    sensitive = results["sensitive"]
    attacks = list(next(iter(conditions.values()))["attacks"])
    rows = [*accuracy_rows(conditions), ["poison fit", *(percent(conditions[c]["poison_fit"]) for c in names)]]
    binary = len(sensitive["values"]) == 2
    for attack in attacks:
        member = {c: conditions[c]["attacks"][attack]["members"] for c in names}
        other = {c: conditions[c]["attacks"][attack]["nonmembers"] for c in names}
        rows.append([f"{attack}: accuracy", *(
            with_interval(member[c]["accuracy"], member[c]["accuracy_ci"]) for c in names)])
        rows.append(["  balanced accuracy", *(
            with_interval(member[c]["balanced_accuracy"], member[c]["balanced_accuracy_ci"]) for c in names)])
        if binary:
            rows.append([f"  AUC ({sensitive['values'][1]} vs {sensitive['values'][0]})", *(
                "-" if member[c].get("auc") is None else format_auc(member[c]) for c in names)])
        rows.append(["  non-member accuracy", *(
            with_interval(other[c]["accuracy"], other[c]["accuracy_ci"]) for c in names)])
    first = conditions[names[0]]["attacks"][attacks[0]]["members"]
    lines: list[Block] = [
        f"attribute inference of '{sensitive['column']}' ({len(sensitive['values'])} values: "
        f"{', '.join(sensitive['values'])}) for {results['targets']} targets",
        "",
        Table(["", *names], rows, caption="Every condition, every attack"),
        "",
        f"accuracy: share of member (model, target) pairs whose value is guessed right ({first['pairs']} "
        f"pairs); {bootstrap_note(results, 'targets')}.",
        f"base rate: always guessing the most common value '{sensitive['majority']}' is right on "
        f"{with_interval(first['base_rate'], first['base_rate_ci'])} of the member pairs "
        f"(balanced accuracy {100 / len(sensitive['values']):.1f}%).",
        "non-member accuracy: the same guess for targets the model never saw, a control: what it "
        "gets right there comes from the population, not from the person.",
    ]
    poisoned = [c for c in names if conditions[c]["replicas"]]
    for c in poisoned:
        lines.append(
            f"{c}: {conditions[c]['replicas']} mislabeled {'replica' if conditions[c]['replicas'] == 1 else 'replicas'} of every candidate completion, "
            f"{percent(conditions[c]['poison_fraction'])} of a model's training set."
        )
    return lines
