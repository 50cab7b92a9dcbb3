"""Stage 8, report: the log-log ROC plot and text tables of results."""

from __future__ import annotations

import io
from pathlib import Path

from truthserum.metrics import FPR_LEVELS, RocCurve
from truthserum.rundir import atomic_write

_LINESTYLES = {"clean": "--", "poisoned": "-"}


def plot_roc(curves: dict[tuple[str, str], RocCurve], path: Path) -> None:
    """Log-log ROC, one curve per (condition, attack); dashed for clean, solid for poisoned.

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
    for (condition, attack), roc in curves.items():
        axes.plot(
            roc.fpr.clip(min=floor), roc.tpr.clip(min=floor),
            linestyle=_LINESTYLES.get(condition, ":"), color=colours[attack],
            label=f"{condition} {attack}",
        )
    axes.plot([floor, 1], [floor, 1], color="grey", linewidth=0.8, linestyle=":")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlim(floor, 1)
    axes.set_ylim(floor, 1)
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.set_title("Membership inference on the targets")
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    atomic_write(Path(path), lambda handle: handle.write(buffer.getvalue()))


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def format_attack_metrics(metrics: dict) -> str:
    """One attack's metrics on one line."""
    rates = "  ".join(
        f"TPR@{100 * float(level):g}%FPR {_percent(tpr)}" for level, tpr in metrics["tpr_at_fpr"].items()
    )
    return f"AUC {metrics['auc']:.3f}  {rates}  ({metrics['members']} members, {metrics['nonmembers']} non-members)"


def format_comparison(results: dict) -> str:
    """A side-by-side table of every condition: accuracy, then each attack's AUC and TPRs."""
    conditions = results["conditions"]
    names = list(conditions)
    attacks = list(next(iter(conditions.values()))["attacks"])
    header = ["", *names]
    rows = [
        ["train accuracy", *(_percent(conditions[c]["accuracy"]["train"]) for c in names)],
        ["test accuracy", *(_percent(conditions[c]["accuracy"]["test"]) for c in names)],
    ]
    for attack in attacks:
        metrics = {c: conditions[c]["attacks"][attack] for c in names}
        rows.append([f"{attack} AUC", *(f"{metrics[c]['auc']:.3f}" for c in names)])
        for level in FPR_LEVELS:
            rows.append([
                f"  TPR @ {100 * level:g}% FPR",
                *(_percent(metrics[c]["tpr_at_fpr"][str(level)]) for c in names),
            ])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i])
                       for i, cell in enumerate(row)) for row in [header, *rows]]
    first = next(iter(conditions.values()))["attacks"][attacks[0]]
    poison = results["poison"]
    lines.append("")
    lines.append(
        f"{first['members']} member and {first['nonmembers']} non-member (model, target) pairs "
        f"per condition; with {first['nonmembers']} non-members the smallest non-zero FPR is "
        f"{100 / first['nonmembers']:.2f}%."
    )
    if poison["total"]:
        lines.append(
            f"poisons: {poison['total']} ({poison['targets']} targets x {poison['replicas']}), "
            f"{_percent(poison['fraction'])} of a model's training set; fitted by "
            f"{_percent(poison['fit'])} of the models that did not train on the target."
        )
    return "\n".join(lines)
