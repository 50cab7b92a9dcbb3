"""Stage 8, report: the figures (the log-log ROC of any task and the sweeps' panels), each
written atomically into the run directory."""

from __future__ import annotations

import io
from pathlib import Path

from truthserum.metrics.roc import RocCurve
from truthserum.report.membership import SWEEP_LEVELS, sweep_series
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

    ticks, series = sweep_series(summary)
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
