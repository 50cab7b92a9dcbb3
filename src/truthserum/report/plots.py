"""Stage 8, report: the figures (the log-log ROC of any task and the sweeps' panels), each
written atomically into the run directory."""

from __future__ import annotations

import io
from pathlib import Path

from truthserum.metrics.roc import RocCurve
from truthserum.report.membership import SWEEP_LEVELS, sweep_series
from truthserum.store.rundir import atomic_write


_LINESTYLES = ("-", "--", "-.", ":")


def attack_families(attacks: list[str]) -> dict[str, list[str]]:
    """Attacks grouped by family: the part of the name before its first "-" when another
    attack shares it (lira-online, lira-offline-fixed -> lira), else the whole name."""
    prefixes = [name.split("-")[0] for name in attacks]
    families: dict[str, list[str]] = {}
    for name, prefix in zip(attacks, prefixes, strict=True):
        families.setdefault(prefix if prefixes.count(prefix) > 1 else name, []).append(name)
    return families


def plot_roc(
    curves: dict[tuple[str, str], RocCurve], path: Path, *, title: str = "Membership inference on the targets",
    run_name: str | None = None,
) -> None:
    """Log-log ROCs, a panel per attack family (LiRA's four variants, RMIA's two, ...), a colour
    per condition (clean and poisoned side by side) and a line style per attack of the family.

    Log axes show the low-FPR region where membership inference matters (Carlini et al.); each
    axis starts at the smallest rate the counts can reach (one non-member, one member), so no
    flat segment suggests a resolution the data do not have. The legends sit outside the data.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.lines import Line2D

    families = attack_families(list(dict.fromkeys(attack for _, attack in curves)))
    conditions = list(dict.fromkeys(condition for condition, _ in curves))
    colours = {condition: f"C{i}" for i, condition in enumerate(conditions)}
    x_floor = 1.0 / max(roc.nonmembers for roc in curves.values())
    y_floor = 1.0 / max(roc.members for roc in curves.values())
    columns = min(len(families), 2)
    rows = -(-len(families) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 4.6 * rows + 0.8), squeeze=False)
    for axis, (family, members) in zip(axes.ravel(), families.items(), strict=False):
        styles = {attack: _LINESTYLES[i % len(_LINESTYLES)] for i, attack in enumerate(members)}
        for (condition, attack), roc in curves.items():
            if attack in styles:
                axis.step(roc.fpr.clip(min=x_floor), roc.tpr.clip(min=y_floor), where="post",
                          linestyle=styles[attack], color=colours[condition], linewidth=1.3)
        axis.plot([x_floor, 1], [x_floor, 1], color="grey", linewidth=0.8, linestyle=":")
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlim(x_floor, 1)
        axis.set_ylim(y_floor, 1.05)
        axis.set_xlabel("false positive rate")
        axis.set_ylabel("true positive rate")
        axis.set_title(family)
        axis.grid(alpha=0.3, which="major")
        if len(members) > 1:  # which line is which attack, under the panel
            axis.legend([Line2D([], [], color="black", linestyle=styles[a]) for a in members], members,
                        fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    for axis in axes.ravel()[len(families):]:
        axis.set_visible(False)
    figure.legend([Line2D([], [], color=colours[c], linewidth=2) for c in conditions], conditions,
                  loc="upper center", ncol=len(conditions), bbox_to_anchor=(0.5, 1.0 - 0.45 / figure.get_figheight()),
                  frameon=False)
    figure.suptitle(title if run_name is None else f"{title}: {run_name}", fontsize=11)
    save_figure(figure, path, rect=(0.0, 0.0, 1.0, 1.0 - 0.8 / figure.get_figheight()))


def save_figure(figure, path: Path, *, dpi: int = 110, rect: tuple[float, ...] | None = None) -> None:
    """Lay out ``figure`` (within ``rect``), write it to ``path`` as PNG atomically, close it."""
    from matplotlib import pyplot as plt

    figure.tight_layout(rect=rect)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    plt.close(figure)
    atomic_write(Path(path), lambda handle: handle.write(buffer.getvalue()))


def _plot_tpr_panel(axis, series: dict[str, dict[str, dict]], positions: dict[str, int], level: str,
                    colours: dict[str, str], apart: frozenset[str] = frozenset()) -> None:
    """One panel: TPR at ``level`` per attack, with interval bars nudged apart; the ``apart``
    ticks (an adaptive budget beside fixed ones) are points, not joined to the line."""
    for index, (attack, by_tick) in enumerate(series.items()):
        dodge = 0.3 * (index / max(len(series) - 1, 1) - 0.5)  # keep interval bars apart
        for joined in (True, False):
            ticks = [t for t in by_tick if (t in apart) is not joined]
            if not ticks:
                continue
            ys = [100 * by_tick[t]["tpr_at_fpr"][level] for t in ticks]
            intervals = [by_tick[t].get("tpr_at_fpr_ci") or {} for t in ticks]
            errors = None
            if all(level in ci for ci in intervals):
                errors = [[y - 100 * ci[level][0] for y, ci in zip(ys, intervals, strict=True)],
                          [100 * ci[level][1] - y for y, ci in zip(ys, intervals, strict=True)]]
            axis.errorbar([positions[t] + dodge for t in ticks], ys, yerr=errors, color=colours[attack], capsize=3,
                          marker="o" if joined else "D", markersize=3 if joined else 5,
                          linestyle="-" if joined else "none", label=attack if joined or len(ticks) == len(by_tick)
                          else None)
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
    # a replica sweep's adaptive column is no budget on the axis: its points stand apart
    apart = frozenset(point["label"] for point in summary["points"] if point.get("adaptive"))
    for row, condition in zip(axes, conditions, strict=True):
        rows_series = {attack: by_tick for (c, attack), by_tick in series.items() if c == condition}
        for axis, level in zip(row, SWEEP_LEVELS, strict=False):
            _plot_tpr_panel(axis, rows_series, positions, level, colours, apart)
            axis.set_title(f"{condition + ': ' if condition else ''}TPR at {100 * float(level):g}% FPR")
        if replica_sweep:
            accuracy = {tick: 100 * p["test_accuracy"] for tick, p in zip(ticks, summary["points"], strict=True)}
            joined = [tick for tick in ticks if tick not in apart]
            row[-1].plot([positions[t] for t in joined], [accuracy[t] for t in joined], marker="o", color="black")
            row[-1].plot([positions[t] for t in apart], [accuracy[t] for t in apart], marker="D", color="black",
                         linestyle="none")
            row[-1].set_title("test accuracy")
            row[-1].set_ylabel("accuracy (%)")
    for axis in axes.ravel():
        axis.set_xticks(range(len(ticks)), ticks)
        axis.set_xlabel(summary["x_label"])
        axis.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    figure.legend(handles, labels, fontsize=8, loc="center right")  # outside the data
    save_figure(figure, path, dpi=100, rect=(0.0, 0.0, 1.0 - legend_inches / width, 1.0))
