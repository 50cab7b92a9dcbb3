"""Stage 8, report: the pieces every task's text table is made of (rates with intervals,
aligned columns, the rows and notes of an attack's ROC)."""

from __future__ import annotations

from truthserum.metrics.roc import FPR_LEVELS


LOW_SUPPORT_MARK = "*"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def interval_text(values: list[float] | None, scale: float = 100.0, digits: int = 1) -> str:
    if values is None:
        return ""
    low, high = values
    return f" [{scale * low:.{digits}f}, {scale * high:.{digits}f}]"


def with_interval(value: float | None, interval: list[float] | None) -> str:
    return f"{percent(value)}{interval_text(interval)}"


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


def support_note(first: dict) -> str:
    note = (
        f"{first['members']} member and {first['nonmembers']} non-member (model, target) pairs per "
        f"condition; {intervals_note(first)}"
    )
    if first.get("epsilon_lower_bound") is not None:
        note += (f"\nepsilon: the largest epsilon (delta {first.get('delta', 0):g}) that the attack's ROC "
                 f"proves at {100 * first.get('confidence', 0.95):g}% confidence (Clopper-Pearson, "
                 "Bonferroni over thresholds); the other bounds, Gaussian DP and one run, are "
                 "defined in docs/auditing.md.")
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


def bootstrap_note(results: dict, over: str) -> str:
    metrics = results["config"]["metrics"]
    if not metrics["bootstrap"]:
        return "no intervals (metrics.bootstrap is 0)"
    return (f"intervals: {100 * metrics['confidence']:g}% percentile bootstrap over {over} "
            f"({metrics['bootstrap']} resamples)")
