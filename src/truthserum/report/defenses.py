"""Stage 8, report: the defense matrix (task ``defenses``), its summary in ``results.json``, its
table in the terminal and its figure, all from the cells' results entries."""

from __future__ import annotations

from pathlib import Path

from truthserum.report.audit import largest_bound
from truthserum.report.blocks import Block, Table, render_text
from truthserum.report.text import interval_text, percent


def _best_attack(attacks: dict) -> str:
    """The attack with the highest TPR at 1% FPR (then at 0.1%, then AUC): the adversary picks it."""
    return max(attacks, key=lambda name: (attacks[name]["tpr_at_fpr"]["0.01"], attacks[name]["tpr_at_fpr"]["0.001"],
                                          attacks[name]["auc"]))


def cell_summary(entry: dict) -> dict:
    """One cell: the best attack's rates with their intervals, the accuracy, what survived the
    defense, the largest Clopper-Pearson bound of any attack, the largest of every bound
    (docs/auditing.md; None in results older than them) and, under DP-SGD, the accountant's
    epsilons."""
    attacks = entry["attacks"]
    best = _best_attack(attacks)
    metrics = attacks[best]
    bound_attack = max(attacks, key=lambda name: attacks[name]["epsilon_lower_bound"])
    intervals = metrics.get("tpr_at_fpr_ci") or {}
    privacy = entry.get("privacy") or {}
    largest = largest_bound(attacks)
    return {
        "best_attack": best,
        "tpr_at_1pct_fpr": metrics["tpr_at_fpr"]["0.01"], "tpr_at_1pct_fpr_ci": intervals.get("0.01"),
        "tpr_at_0.1pct_fpr": metrics["tpr_at_fpr"]["0.001"], "tpr_at_0.1pct_fpr_ci": intervals.get("0.001"),
        "low_support_0.1pct": bool(metrics.get("low_support", {}).get("0.001")),
        "auc": metrics["auc"], "auc_ci": metrics.get("auc_ci"),
        "test_accuracy": entry["accuracy"]["test"],
        "poisons_surviving": entry["survivors"]["poisons_surviving"],
        "poison_fit": entry.get("poison_fit"),
        "epsilon_lower_bound": attacks[bound_attack]["epsilon_lower_bound"], "epsilon_lower_bound_attack": bound_attack,
        "largest_bound": None if largest is None else largest[0],
        "largest_bound_attack": None if largest is None else largest[1],
        "largest_bound_name": None if largest is None else largest[2],
        "epsilon": privacy.get("epsilon"), "group_epsilon": privacy.get("group_epsilon"),
        "group_size": privacy.get("group_size"),
        "trained_as": entry["trained_as"],
    }


def matrix_summary(conditions: dict, rows: list[str], columns: list[str]) -> dict:
    """``defense_matrix`` of results.json: the rows, the columns, and each cell's summary."""
    return {
        "rows": rows, "columns": columns,
        "cells": {row: {column: cell_summary(conditions[f"{row}.{column}"]) for column in columns} for row in rows},
    }


def _rate(cell: dict, level: str) -> str:
    key = "tpr_at_1pct_fpr" if level == "0.01" else "tpr_at_0.1pct_fpr"
    mark = "*" if level == "0.001" and cell["low_support_0.1pct"] else ""
    return f"{percent(cell[key])}{interval_text(cell.get(key + '_ci'), digits=0)}{mark}"


def _block(title: str, matrix: dict, value) -> list[Block]:
    rows = [[row, *(value(matrix["cells"][row][column]) for column in matrix["columns"])] for row in matrix["rows"]]
    return ["", Table(["", *matrix["columns"]], rows, title=title)]


def format_defenses(results: dict) -> str:
    """The defense matrix as the terminal shows it: one block per measurement, rows defenses,
    columns poison strategies."""
    return render_text(defenses_blocks(results))


def defenses_blocks(results: dict) -> list[Block]:
    """:func:`format_defenses` as blocks."""
    matrix = results["defense_matrix"]
    lines: list[Block] = ["Defense matrix: the best attack of each cell (rows: defenses, columns: poison strategies)"]
    lines += _block("TPR at 1% FPR [95% CI]", matrix, lambda cell: _rate(cell, "0.01"))
    lines += _block("TPR at 0.1% FPR [95% CI]", matrix, lambda cell: _rate(cell, "0.001"))
    lines += _block("AUC", matrix, lambda cell: f"{cell['auc']:.3f}")
    lines += _block("test accuracy", matrix, lambda cell: percent(cell["test_accuracy"]))
    lines += _block("poisons surviving the defense", matrix,
                    lambda cell: "-" if cell["poisons_surviving"] is None else percent(cell["poisons_surviving"]))
    lines += _block("empirical epsilon lower bound (largest of any attack)", matrix,
                    lambda cell: f"{cell['epsilon_lower_bound']:.2f}")
    for row in matrix["rows"]:
        cells = matrix["cells"][row]
        private = [cell for cell in cells.values() if cell["epsilon"] is not None]
        if private:
            def span(key: str, digits: int) -> str:
                low, high = min(cell[key] for cell in private), max(cell[key] for cell in private)
                return f"{low:,.{digits}f}" if f"{low:,.{digits}f}" == f"{high:,.{digits}f}" else \
                    f"{low:,.{digits}f} to {high:,.{digits}f}"

            bound = max(cell["epsilon_lower_bound"] for cell in private)
            every = [cell["largest_bound"] for cell in private if cell.get("largest_bound") is not None]
            every_text = f" (of every bound in docs/auditing.md: {max(every):.2f})" if every else ""
            lines += ["", f"{row}: the accountant's epsilon {span('epsilon', 2)} per example (what bounds this "
                          f"attack: the worlds differ in the target alone), {span('group_epsilon', 0)} for a group "
                          f"of {private[0]['group_size']} replicas (a valid, loose RDP bound); the largest empirical "
                          f"Clopper-Pearson lower bound in this row: {bound:.2f}{every_text}"]
    reused = [f"{row}.{column} = {matrix['cells'][row][column]['trained_as']}"
              for row in matrix["rows"] for column in matrix["columns"]
              if matrix["cells"][row][column]["trained_as"] != f"{row}.{column}"]
    if reused:
        lines += ["", "the same training sets after their defense, so the same models (trained once): "
                  + ", ".join(reused)]
    if any(cell["low_support_0.1pct"] for row in matrix["cells"].values() for cell in row.values()):
        lines.append("* fewer than 1,000 non-members behind TPR at 0.1% FPR: one false positive moves it past the "
                     "level")
    return lines


def plot_defense_matrix(matrix: dict, path: Path) -> None:
    """Two heat maps, the best attack's TPR at 1% and at 0.1% FPR, each cell annotated."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from matplotlib import pyplot as plt

    from truthserum.report.plots import save_figure

    rows, columns = matrix["rows"], matrix["columns"]
    figure, axes = plt.subplots(1, 2, figsize=(4 + 2.4 * len(columns), 1.2 + 0.6 * len(rows)))
    for axis, (level, key) in zip(axes, (("1%", "tpr_at_1pct_fpr"), ("0.1%", "tpr_at_0.1pct_fpr")), strict=True):
        values = np.array([[matrix["cells"][row][column][key] for column in columns] for row in rows])
        axis.imshow(values, cmap="Reds", vmin=0, vmax=1, aspect="auto")
        for i in range(len(rows)):
            for j in range(len(columns)):
                axis.text(j, i, f"{100 * values[i, j]:.0f}%", ha="center", va="center",
                          color="white" if values[i, j] > 0.6 else "black", fontsize=9)
        axis.set_xticks(range(len(columns)), columns)
        axis.set_yticks(range(len(rows)), rows)
        axis.set_title(f"best attack's TPR at {level} FPR")
    save_figure(figure, path)
