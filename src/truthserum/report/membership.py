"""Stage 8, report: the log-log ROC plot and text tables of results."""

from __future__ import annotations

import io
from pathlib import Path

from truthserum.metrics.roc import FPR_LEVELS, RocCurve
from truthserum.store.rundir import atomic_write

_LINESTYLES = ("--", "-", "-.", ":")


def plot_roc(
    curves: dict[tuple[str, str], RocCurve], path: Path, *, title: str = "Membership inference on the targets",
) -> None:
    """Log-log ROC, one curve per (condition, attack): a colour per attack, a line style per
    condition (the first, the clean baseline, dashed; the next solid).

    Log axes show the low-FPR region where membership inference matters (Carlini et al.).
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(6.5, 6))
    # FPR 0 cannot sit on a log axis: draw it half a step below the smallest non-zero FPR.
    floor = min(1e-3, 0.5 / max(roc.nonmembers for roc in curves.values()))
    attacks = sorted({attack for _, attack in curves})
    colours = {attack: f"C{i}" for i, attack in enumerate(attacks)}
    conditions = list(dict.fromkeys(condition for condition, _ in curves))
    styles = {condition: _LINESTYLES[i % len(_LINESTYLES)] for i, condition in enumerate(conditions)}
    for (condition, attack), roc in curves.items():
        axes.plot(
            roc.fpr.clip(min=floor), roc.tpr.clip(min=floor),
            linestyle=styles[condition], color=colours[attack],
            label=f"{condition} {attack}",
        )
    axes.plot([floor, 1], [floor, 1], color="grey", linewidth=0.8, linestyle=":")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlim(floor, 1)
    axes.set_ylim(floor, 1)
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.set_title(title)
    axes.legend(fontsize=8, loc="lower right")
    save_figure(figure, path)


def save_figure(figure, path: Path, *, dpi: int = 110, rect: tuple[float, ...] | None = None) -> None:
    """Lay out ``figure`` (within ``rect``), write it to ``path`` as PNG atomically, close it."""
    from matplotlib import pyplot as plt

    figure.tight_layout(rect=rect)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    plt.close(figure)
    atomic_write(Path(path), lambda handle: handle.write(buffer.getvalue()))


LOW_SUPPORT_MARK = "*"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def interval_text(values: list[float] | None, scale: float = 100.0, digits: int = 1) -> str:
    if values is None:
        return ""
    low, high = values
    return f" [{scale * low:.{digits}f}, {scale * high:.{digits}f}]"


def format_tpr(metrics: dict, level: str) -> str:
    """TPR at one level with its interval, marked when too few non-members stand behind it."""
    mark = LOW_SUPPORT_MARK if metrics.get("low_support", {}).get(level) else ""
    intervals = metrics.get("tpr_at_fpr_ci") or {}
    return f"{percent(metrics['tpr_at_fpr'][level])}{interval_text(intervals.get(level))}{mark}"


def format_auc(metrics: dict) -> str:
    return f"{metrics['auc']:.3f}{interval_text(metrics.get('auc_ci'), scale=1.0, digits=3)}"


def format_attack_metrics(metrics: dict) -> str:
    """One attack's metrics: AUC and each TPR with intervals, then the epsilon lower bound."""
    rates = "  ".join(
        f"TPR@{100 * float(level):g}%FPR {format_tpr(metrics, level)}" for level in metrics["tpr_at_fpr"]
    )
    text = f"AUC {format_auc(metrics)}  {rates}  ({metrics['members']} members, {metrics['nonmembers']} non-members)"
    if metrics.get("epsilon_lower_bound") is not None:
        text += f"  epsilon >= {metrics['epsilon_lower_bound']:.2f}"
    if metrics.get("tuned_offline_a") is not None:
        text += "  tuned a " + " / ".join(f"{a:g}" for a in metrics["tuned_offline_a"])
    return text


def table_lines(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return ["  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i])
                      for i, cell in enumerate(row)) for row in [header, *rows]]


def intervals_note(metrics: dict) -> str:
    """How the intervals were made (or that there are none) and what the low-support mark means."""
    intervals = (f"intervals: {100 * (metrics.get('confidence') or 0.95):g}% bootstrap over target points"
                 if metrics.get("auc_ci") is not None else "no intervals (metrics.bootstrap is 0)")
    return (f"{intervals}. {LOW_SUPPORT_MARK} fewer than 10 non-members can be false positives at "
            "that level: a TPR at (almost) zero false positives.")


def _support_note(first: dict) -> str:
    note = (
        f"{first['members']} member and {first['nonmembers']} non-member (model, target) pairs per "
        f"condition; {intervals_note(first)}"
    )
    if first.get("epsilon_lower_bound") is not None:
        note += (f"\nepsilon: the largest epsilon (delta {first.get('delta', 0):g}) that the attack's ROC "
                 f"proves at {100 * first.get('confidence', 0.95):g}% confidence (Clopper-Pearson, "
                 "Bonferroni over thresholds).")
    return note


def accuracy_rows(conditions: dict) -> list[list[str]]:
    """Train and test accuracy of every condition, the first rows of each task's table."""
    return [
        [f"{split} accuracy", *(percent(condition["accuracy"][split]) for condition in conditions.values())]
        for split in ("train", "test")
    ]


def roc_rows(metrics: dict[str, dict], attack: str, levels=FPR_LEVELS) -> list[list[str]]:
    """An attack's AUC and TPR at each FPR level, one column per condition."""
    rows = [[f"{attack} AUC", *(format_auc(m) for m in metrics.values())]]
    for level in levels:
        rows.append([f"  TPR @ {100 * level:g}% FPR", *(format_tpr(m, str(level)) for m in metrics.values())])
    return rows


def format_comparison(results: dict) -> str:
    """A side-by-side table of every condition: accuracy, then each attack's AUC, TPRs and
    epsilon lower bound, with intervals."""
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
        if any(metrics[c].get("tuned_offline_a") for c in names):
            rows.append(["  tuned a (two halves)", *(
                " / ".join(f"{a:g}" for a in metrics[c].get("tuned_offline_a") or []) or "-" for c in names
            )])
    lines = table_lines(["", *names], rows)
    first = next(iter(conditions.values()))["attacks"][attacks[0]]
    poison = results["poison"]
    lines.append("")
    lines.append(_support_note(first))
    if poison["total"]:
        lines.append(
            f"poisons: {poison['total']} ({poison['targets']} targets x {poison['replicas']}), "
            f"{percent(poison['fraction'])} of a model's training set; fitted by "
            f"{percent(poison['fit'])} of the models that did not train on the target."
        )
    return "\n".join(lines)


SWEEP_LEVELS = ("0.001", "0.01")


def _sweep_series(summary: dict) -> tuple[list[str], dict[tuple[str, str], dict[str, dict]]]:
    """x tick labels in order, and (condition, attack) -> x label -> metrics."""
    shadow_sweep = summary["sweep"] == "shadow-models"
    ticks: list[str] = []
    series: dict[tuple[str, str], dict[str, dict]] = {}
    for point in summary["points"]:
        tick = point["label"] if shadow_sweep else str(point["replicas"])
        if tick not in ticks:
            ticks.append(tick)
        condition = point["condition"] if shadow_sweep else ""
        for attack, metrics in point["attacks"].items():
            series.setdefault((condition, attack), {})[tick] = metrics
    return ticks, series


def _plot_tpr_panel(axis, series: dict[str, dict[str, dict]], positions: dict[str, int], level: str,
                    colours: dict[str, str]) -> None:
    """One panel: TPR at ``level`` per attack, with interval bars nudged apart."""
    for index, (attack, by_tick) in enumerate(series.items()):
        dodge = 0.3 * (index / max(len(series) - 1, 1) - 0.5)  # keep interval bars apart
        xs = [positions[t] + dodge for t in by_tick]
        ys = [100 * m["tpr_at_fpr"][level] for m in by_tick.values()]
        intervals = [m.get("tpr_at_fpr_ci") or {} for m in by_tick.values()]
        errors = None
        if all(level in ci for ci in intervals):
            errors = [[y - 100 * ci[level][0] for y, ci in zip(ys, intervals, strict=True)],
                      [100 * ci[level][1] - y for y, ci in zip(ys, intervals, strict=True)]]
        axis.errorbar(xs, ys, yerr=errors, color=colours[attack], capsize=3, marker="o",
                      markersize=3, label=attack)
    axis.set_ylabel("true positive rate (%)")


def plot_sweep(summary: dict, path: Path) -> None:
    """TPR at 0.1% and 1% FPR (with interval bars) against the swept quantity, one line per
    attack; a replica sweep adds test accuracy, a shadow-model sweep gets one row of panels
    per condition (32 lines in one panel are unreadable)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    ticks, series = _sweep_series(summary)
    replica_sweep = summary["sweep"] == "replicas"
    conditions = list(dict.fromkeys(condition for condition, _ in series))
    columns = len(SWEEP_LEVELS) + (1 if replica_sweep else 0)
    legend_inches = 1.9
    width = 4.8 * columns + legend_inches
    figure, axes = plt.subplots(len(conditions), columns, figsize=(width, 3.9 * len(conditions) + 0.5),
                                squeeze=False)
    attacks = sorted({attack for _, attack in series})
    colours = {attack: f"C{i}" for i, attack in enumerate(attacks)}
    positions = {tick: i for i, tick in enumerate(ticks)}
    for row, condition in zip(axes, conditions, strict=True):
        rows_series = {attack: by_tick for (c, attack), by_tick in series.items() if c == condition}
        for axis, level in zip(row, SWEEP_LEVELS, strict=False):
            _plot_tpr_panel(axis, rows_series, positions, level, colours)
            axis.set_title(f"{condition + ': ' if condition else ''}TPR at {100 * float(level):g}% FPR")
        if replica_sweep:
            row[-1].plot(range(len(ticks)), [100 * p["test_accuracy"] for p in summary["points"]],
                         marker="o", color="black")
            row[-1].set_title("test accuracy")
            row[-1].set_ylabel("accuracy (%)")
    for axis in axes.ravel():
        axis.set_xticks(range(len(ticks)), ticks)
        axis.set_xlabel(summary["x_label"])
        axis.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    figure.legend(handles, labels, fontsize=8, loc="center right")  # outside the data
    save_figure(figure, path, dpi=100, rect=(0.0, 0.0, 1.0 - legend_inches / width, 1.0))


def format_sweep(summary: dict) -> str:
    """TPR at 0.1% and 1% FPR (with intervals) per attack against the swept quantity."""
    ticks, series = _sweep_series(summary)
    lines = []
    for level in SWEEP_LEVELS:
        rows = []
        if summary["sweep"] == "replicas":
            rows.append(["test accuracy", *(percent(p["test_accuracy"]) for p in summary["points"])])
        for (condition, attack), by_tick in series.items():
            rows.append([f"{condition} {attack}".strip(),
                         *(format_tpr(by_tick[t], level) if t in by_tick else "-" for t in ticks)])
        lines.append(f"TPR at {100 * float(level):g}% FPR, by {summary['x_label']}:")
        lines.extend(table_lines(["", *ticks], rows))
        lines.append("")
    first_series = next(iter(series.values()))
    lines.append(intervals_note(next(iter(first_series.values()))))
    return "\n".join(lines)
