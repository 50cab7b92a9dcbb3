"""Stage 8, report: the membership task's side-by-side table and the sweeps' tables."""

from __future__ import annotations

from truthserum.report.audit import audit_lines, bounds_row
from truthserum.report.blocks import Block, Table, render_text
from truthserum.report.text import (
    accuracy_rows, format_tpr, intervals_note, percent, roc_rows, support_note,
)


def format_comparison(results: dict) -> str:
    """A side-by-side table of every condition: accuracy, then each attack's AUC, TPRs and
    epsilon lower bound, with intervals."""
    return render_text(comparison_blocks(results))


def comparison_blocks(results: dict) -> list[Block]:
    """:func:`format_comparison` as blocks (the table, then its notes)."""
    conditions = results["conditions"]
    names = list(conditions)
    attacks = list(next(iter(conditions.values()))["attacks"])
    rows = accuracy_rows(conditions)
    for attack in attacks:
        metrics = {c: conditions[c]["attacks"][attack] for c in names}
        rows.extend(roc_rows(metrics, attack))
        if metrics[names[0]].get("epsilon_lower_bound") is not None:
            rows.append(["  epsilon lower bound",
                         *(f"{metrics[c]['epsilon_lower_bound']:.2f}" for c in names)])
        more = [bounds_row(metrics[c]) for c in names]
        if all(more):
            rows.append([more[0][0], *(row[1] for row in more)])
        if any(metrics[c].get("tuned_offline_a") for c in names):
            rows.append(["  tuned a (two halves)", *(
                " / ".join(f"{a:g}" for a in metrics[c].get("tuned_offline_a") or []) or "-" for c in names
            )])
    lines: list[Block] = [Table(["", *names], rows, caption="Every condition, every attack")]
    first = next(iter(conditions.values()))["attacks"][attacks[0]]
    poison = results["poison"]
    lines.append("")
    lines.extend(support_note(first).split("\n"))
    if poison["total"] and "poisoned" in conditions:  # an adaptive run trains no fixed budget
        lines.append(
            f"poisons: {poison['total']} ({poison['targets']} targets x {poison['replicas']}), "
            f"{percent(poison['fraction'])} of a model's training set; fitted by "
            f"{percent(poison['fit'])} of the models that did not train on the target."
        )
    adaptive = poison.get("adaptive")
    if adaptive:
        spread = ", ".join(f"{count} x {budget}" for budget, count in adaptive["targets_per_budget"].items())
        fixed = f"against {adaptive['fixed_total']} for {poison['replicas']} each and " if adaptive["fixed_total"] else ""
        lines.append(
            f"adaptive ({adaptive['goal']}): {adaptive['total']} poisons, {adaptive['mean_replicas']:.2f} per target "
            f"(targets x replicas: {spread}), {percent(adaptive.get('fraction'))} of a model's training set, "
            f"{fixed}a cap of {adaptive['cap']}; chosen on {adaptive['calibration_models']} calibration models "
            f"({adaptive['calibration_seconds']:.0f} s of training); fitted by {percent(adaptive['fit'])}."
        )
    lines.extend(defense_lines(conditions))
    lines.extend(audit_lines(conditions))
    lines.extend(guidance_lines(results.get("guidance")))  # absent from runs older than the guidance
    return lines


def defense_lines(conditions: dict) -> list[str]:
    """What a run's defense left of each condition's poisons and, under DP-SGD, what the
    accountant says (nothing for a run without a defense section)."""
    defended = {name: entry for name, entry in conditions.items() if entry.get("defense") not in (None, "none")}
    if not defended:
        return []
    lines = [f"defense: {next(iter(defended.values()))['defense']} (docs/defenses.md)"]
    for name, entry in defended.items():
        survivors = entry["survivors"]
        text = f"  {name}: {percent(survivors['pool_points_kept'])} of the pool's points kept"
        if survivors["poisons_surviving"] is not None:
            text += (f", {percent(survivors['poisons_surviving'])} of the poisons survive (of a member target's: "
                     f"{percent(survivors['poisons_surviving_target_member'])}, of a non-member's: "
                     f"{percent(survivors['poisons_surviving_target_nonmember'])})")
        privacy = entry.get("privacy")
        if privacy:
            text += (f"; DP-SGD: epsilon {privacy['epsilon']:.2f} per example ({privacy['accountant']}), "
                     f"{privacy['group_epsilon']:,.0f} for a group of {privacy['group_size']}")
        lines.append(text)
    return lines


def guidance_lines(guidance: dict | None) -> list[str]:
    """The closing block of a run whose amplification is small: why (each finding: what was
    measured and why it matters) and what to change. Nothing when there are no findings."""
    if not guidance or not guidance.get("findings"):
        return []
    clean, poisoned = guidance["clean"], guidance["poisoned"]
    lines = ["", (f"Why the amplification is small (best TPR at 1% FPR: {percent(clean['tpr_at_1pct_fpr'])} clean, "
                  f"{percent(poisoned['tpr_at_1pct_fpr'])} {poisoned['condition']}):")]
    changes: list[str] = []
    for finding in guidance["findings"]:
        lines.append(f"- {finding['measured']}: {finding['why']}")
        changes.extend(item["text"] for item in finding["suggestions"] if item["text"] not in changes)
    if changes:
        lines.append("What to change:")
        lines.extend(f"  {change}" for change in changes)
    return lines


SWEEP_LEVELS = ("0.001", "0.01")


def sweep_series(summary: dict) -> tuple[list[str], dict[tuple[str, str], dict[str, dict]]]:
    """x tick labels in order, and (condition, attack) -> x label -> metrics."""
    shadow_sweep = summary["sweep"] == "shadow-models"
    ticks: list[str] = []
    series: dict[tuple[str, str], dict[str, dict]] = {}
    for point in summary["points"]:
        tick = point["label"] if shadow_sweep or "label" in point else str(point["replicas"])
        if tick not in ticks:
            ticks.append(tick)
        condition = point["condition"] if shadow_sweep else ""
        for attack, metrics in point["attacks"].items():
            series.setdefault((condition, attack), {})[tick] = metrics
    return ticks, series


def format_sweep(summary: dict) -> str:
    """TPR at 0.1% and 1% FPR (with intervals) per attack against the swept quantity."""
    return render_text(sweep_blocks(summary))


def sweep_blocks(summary: dict) -> list[Block]:
    """:func:`format_sweep` as blocks (a table per FPR level, then the intervals' note)."""
    ticks, series = sweep_series(summary)
    lines: list[Block] = []
    for level in SWEEP_LEVELS:
        rows = []
        if summary["sweep"] == "replicas":
            rows.append(["test accuracy", *(percent(p["test_accuracy"]) for p in summary["points"])])
        for (condition, attack), by_tick in series.items():
            rows.append([f"{condition} {attack}".strip(),
                         *(format_tpr(by_tick[t], level) if t in by_tick else "-" for t in ticks)])
        lines.append(Table(["", *ticks], rows, title=f"TPR at {100 * float(level):g}% FPR, by {summary['x_label']}:"))
        lines.append("")
    first_series = next(iter(series.values()))
    lines.append(intervals_note(next(iter(first_series.values()))))
    return lines
