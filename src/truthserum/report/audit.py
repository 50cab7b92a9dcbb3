"""Stage 8, report: every epsilon lower bound of each attack, and, under DP-SGD, the audit: each
bound beside the accountant's epsilon (definitions in docs/auditing.md)."""

from __future__ import annotations

from truthserum.metrics.bounds import BOUND_FIELDS
from truthserum.report.blocks import Block, Table


def bound_text(bounds: dict, name: str) -> str:
    value = bounds.get(BOUND_FIELDS[name])
    return "-" if value is None else f"{value:.2f}"


def largest_bound(attacks: dict) -> tuple[float, str, str] | None:
    """The largest bound of any attack (value, attack, bound name); None when no attack
    carries the bounds (results older than them)."""
    found = [(value, attack, name) for attack, metrics in attacks.items()
             for name, key in BOUND_FIELDS.items()
             if (value := (metrics.get("epsilon_bounds") or {}).get(key)) is not None]
    return max(found, key=lambda item: item[0]) if found else None


def bounds_row(metrics: dict) -> list[str] | None:
    """The compact row of an attack's bounds in a condition table, or None for results that
    predate them."""
    bounds = metrics.get("epsilon_bounds")
    if not bounds:
        return None
    return ["  epsilon: gaussian / split / one run / f-DP",
            " / ".join(bound_text(bounds, name) for name in ("gaussian", "gaussian-split", "one-run", "one-run-fdp"))]


def audit_lines(conditions: dict) -> list[Block]:
    """The audit block of a run under DP-SGD: per condition and attack every bound beside that
    condition's accountant epsilon, then the verdict: the largest bound below its condition's
    epsilon, or every bound above it. Nothing for a run without DP-SGD."""
    private = {name: entry for name, entry in conditions.items() if entry.get("privacy")}
    rows, above, largest = [], [], None
    names = list(BOUND_FIELDS)
    first_bounds: dict | None = None
    for condition, entry in private.items():
        accountant = entry["privacy"]["epsilon"]
        for attack, metrics in entry["attacks"].items():
            bounds = metrics.get("epsilon_bounds")
            if not bounds:
                continue
            first_bounds = first_bounds or bounds
            rows.append([f"{condition} {attack}", *(bound_text(bounds, name) for name in names), f"{accountant:.2f}"])
            above += [(bounds[BOUND_FIELDS[name]], name, attack, condition, accountant) for name in names
                      if bounds.get(BOUND_FIELDS[name]) is not None and bounds[BOUND_FIELDS[name]] > accountant]
        found = largest_bound(entry["attacks"])
        if found and (largest is None or found[0] > largest[0]):
            largest = (*found, condition, accountant)
    if first_bounds is None or largest is None:
        return []
    privacy = next(iter(private.values()))["privacy"]
    lines: list[Block] = ["", (f"Audit: every lower bound ({100 * first_bounds['confidence']:g}% confidence, delta "
                  f"{first_bounds['delta']:g}) beside the accountant's epsilon per example (delta "
                  f"{privacy['delta']:g}, {privacy['accountant']}); docs/auditing.md")]
    lines.append(Table(["", *names, "accountant"], rows, caption="Every epsilon lower bound beside the accountant's epsilon"))
    lines.append(f"many runs: every (model, target) pair; one run: the first model's "
                 f"{first_bounds['one_run_canaries']} targets as canaries.")
    if first_bounds["delta"] != privacy["delta"]:
        lines.append(f"note: the bounds are at delta {first_bounds['delta']:g}, the accountant at "
                     f"{privacy['delta']:g}; set metrics.delta to the defense's delta to compare them.")
    for value, name, attack, condition, accountant in above:
        lines.append(f"{name} bound {value:.2f} ({attack}, {condition}) EXCEEDS the accountant's {accountant:.2f}")
    if above:
        tries = sum(cell != "-" for row in rows for cell in row[1:-1])
        lines.append(f"each bound holds at {100 * first_bounds['confidence']:g}% alone and this table has {tries} "
                     "of them, so one above the accountant can be chance; the Gaussian ones also assume a Gaussian "
                     "trade-off curve. Confirm on a new run (another seed) with the attack and bound named in "
                     "advance: an excess that repeats means the training is less private than accounted "
                     "(docs/auditing.md).")
    else:
        value, attack, name, condition, accountant = largest
        lines.append(f"largest bound {value:.2f} ({name}, {attack}, {condition}), below the accountant's "
                     f"{accountant:.2f}: no evidence against the accounting")
    return lines
