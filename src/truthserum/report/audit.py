"""Stage 8, report: every epsilon lower bound of each attack, and, under DP-SGD, the audit: each
bound beside the accountant's epsilon (definitions in docs/auditing.md)."""

from __future__ import annotations

from truthserum.metrics.bounds import BOUND_LABELS
from truthserum.report.text import table_lines

BOUND_KEYS = {
    "clopper-pearson": "clopper_pearson", "gaussian": "gaussian", "gaussian-split": "gaussian_split",
    "one-run": "one_run", "one-run-fdp": "one_run_fdp",
}


def bound_text(bounds: dict, name: str) -> str:
    value = bounds.get(BOUND_KEYS[name])
    return "-" if value is None else f"{value:.2f}"


def bounds_row(metrics: dict) -> list[str] | None:
    """The compact row of an attack's bounds in a condition table, or None for results that
    predate them."""
    bounds = metrics.get("epsilon_bounds")
    if not bounds:
        return None
    return ["  epsilon: gaussian / split / one run / f-DP",
            " / ".join(bound_text(bounds, name) for name in ("gaussian", "gaussian-split", "one-run", "one-run-fdp"))]


def audit_lines(conditions: dict) -> list[str]:
    """The audit block of a run under DP-SGD: per condition and attack every bound, then the
    largest against the accountant's epsilon. Nothing for a run without DP-SGD."""
    private = {name: entry for name, entry in conditions.items() if entry.get("privacy")}
    if not private:
        return []
    rows, largest = [], (-1.0, "", "", "")
    names = list(BOUND_LABELS)
    first_bounds: dict | None = None
    for condition, entry in private.items():
        for attack, metrics in entry["attacks"].items():
            bounds = metrics.get("epsilon_bounds")
            if not bounds:
                continue
            first_bounds = first_bounds or bounds
            rows.append([f"{condition} {attack}", *(bound_text(bounds, name) for name in names)])
            for name in names:
                value = bounds.get(BOUND_KEYS[name])
                if value is not None and value > largest[0]:
                    largest = (value, condition, attack, name)
    if first_bounds is None:
        return []
    privacy = next(iter(private.values()))["privacy"]
    accountant = privacy["epsilon"]
    lines = ["", (f"Audit: every lower bound ({100 * first_bounds['confidence']:g}% confidence, delta "
                  f"{first_bounds['delta']:g}) beside the accountant's epsilon {accountant:.2f} per example "
                  f"(delta {privacy['delta']:g}, {privacy['accountant']}); docs/auditing.md")]
    lines.extend(table_lines(["", *names], rows))
    lines.append(f"many runs: every (model, target) pair; one run: the first model's "
                 f"{first_bounds['one_run_canaries']} targets as canaries.")
    value, condition, attack, name = largest
    if first_bounds["delta"] != privacy["delta"]:
        lines.append(f"note: the bounds are at delta {first_bounds['delta']:g}, the accountant at "
                     f"{privacy['delta']:g}; set metrics.delta to the defense's delta to compare them.")
    if value > accountant:
        lines.append(f"largest bound {value:.2f} ({name}, {attack}, {condition}) EXCEEDS the accountant's "
                     f"{accountant:.2f}: the training is less private than accounted, or the bound's "
                     "premises fail here (docs/auditing.md)")
    else:
        lines.append(f"largest bound {value:.2f} ({name}, {attack}, {condition}), below the accountant's "
                     f"{accountant:.2f}: no evidence against the accounting")
    return lines
