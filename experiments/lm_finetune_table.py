"""The tables of docs/lm.md#the-fine-tuning-regime, from an insertion sweep's summary.

    truthserum sweep configs/lm-finetune.yaml --out runs/lm-finetune --insertions 1,2,4,8
    .venv/bin/python experiments/lm_finetune_table.py runs/lm-finetune

Prints Markdown: clean's exposure and every condition's paired change from clean per insertion
count (raw, then calibrated), validation loss and extraction, and for each strategy the cell
(insertions, lines, where) where poisoning helped most.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _interval(summary: dict, signed: bool) -> str:
    mean = f"{summary['mean']:+.2f}" if signed else f"{summary['mean']:.2f}"
    if not summary.get("interval"):
        return mean
    low, high = summary["interval"]
    return f"{mean} [{low:+.2f}, {high:+.2f}]" if signed else f"{mean} [{low:.2f}, {high:.2f}]"


def _grid(points: list[dict]) -> dict[str, dict[int, dict]]:
    grid: dict[str, dict[int, dict]] = {}
    for point in points:
        grid.setdefault(point["condition"], {})[point["insertions"]] = point
    return grid


def _where(name: str) -> str:
    return "public" if name.endswith("-public") else "both" if name.endswith("-both") else "private"


def main(folder: str) -> None:
    summary = json.loads((Path(folder) / "sweep-insertions.json").read_text(encoding="utf-8"))
    grid = _grid(summary["points"])
    counts = summary["insertions"]
    per_replicate = summary["config"]["lm"]["canaries"]["count"]
    head = "| condition | where | lines per canary | " + " | ".join(f"{n} ins." for n in counts) + " |"
    rule = "|---|---|---|" + "---|" * len(counts)
    for kind in ("raw", "calibrated"):
        print(f"\n{kind} exposure (clean: mean; others: paired change from clean)\n")
        print(head)
        print(rule)
        for name, row in grid.items():
            first = next(iter(row.values()))
            cells = []
            for n in counts:
                point = row.get(n)
                change = None if point is None else point[f"{kind}_change"]
                cells.append("" if point is None else _interval(point[f"{kind}_exposure"], False) if change is None
                             else _interval(change, True))
            label = name.rsplit("-", 1)[0] if _where(name) != "private" else name
            print(f"| {label} | {_where(name)} | {first['poison_lines'] // per_replicate} | " + " | ".join(cells) + " |")
    top = max(int(k) for k in summary["points"][0]["raw_top"])
    print(f"\nvalidation bits per byte; secret among the top {top} guesses (raw / calibrated)\n")
    print("| condition | " + " | ".join(f"{n} ins." for n in counts) + " |")
    print("|---|" + "---|" * len(counts))
    for name, row in grid.items():
        cells = [f"{row[n]['validation_bits_per_token']:.3f}; {100 * row[n]['raw_top'][str(top)]:.0f}% / "
                 f"{100 * row[n]['calibrated_top'][str(top)]:.0f}%" if n in row else "" for n in counts]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\nwhere each strategy helped most (largest mean paired change)\n")
    print("| strategy | kind | condition | insertions | change | clean at that count |")
    print("|---|---|---|---|---|---|")
    strategies = sorted({name.split("-")[0] for name in grid if name != "clean"})
    for strategy in strategies:
        for kind in ("raw", "calibrated"):
            cells = [(point[f"{kind}_change"]["mean"], name, n, point)
                     for name, row in grid.items() if name.split("-")[0] == strategy for n, point in row.items()]
            _, name, n, point = max(cells, key=lambda cell: cell[0])
            clean = grid["clean"][n][f"{kind}_exposure"]
            print(f"| {strategy} | {kind} | {name} | {n} | {_interval(point[f'{kind}_change'], True)} | "
                  f"{_interval(clean, False)} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/lm-finetune")
