"""The figures of docs/own-model.md: audits of models the user brings, on tables bundled with
scikit-learn.

Run: ``.venv/bin/python experiments/own_model_figures.py [--out runs/own-model-figures]``.
Writes each audit's run directory under ``--out`` and a summary ``figures.json`` there, and
prints the tables the page shows. Every number comes from one seed (0); the intervals are the
runs' 95% bootstrap intervals over target points.

1. scikit-learn's ``MLPClassifier`` through the trainer protocol (``SklearnTrainer``) on the
   breast-cancer table (569 rows, standardised), clean against poisoned: 20 targets with 4
   replicas each (22% of a training set), and 30 targets with one replica each (9.6%).
2. The default path against the guided one on two bundled tables (breast-cancer, wine): a
   config naming only the table (every other setting its default), then the same config with
   the run's own guidance applied (``truthserum.apply_suggestions``), and once more if that
   run's guidance still finds the amplification small.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

from sklearn.datasets import load_breast_cancer
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

from truthserum import Dataset, audit_membership, parse_config, run_task
from truthserum import apply_suggestions


def attack_row(results, condition: str, attack: str) -> dict:
    result = results.attack(condition, attack)
    low, high = result.metrics.tpr_at_fpr_ci[0.01]
    return {"auc": result.auc, "tpr_at_1pct_fpr": result.tpr_at_fpr[0.01], "tpr_ci": [low, high]}


def sklearn_mlp_on_breast_cancer(out: Path, *, num_targets: int = 20, replicas: int = 4) -> dict:
    x, y = load_breast_cancer(return_X_y=True)
    data = Dataset.from_arrays(x=StandardScaler().fit_transform(x), y=y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        results = audit_membership(
            data=data, model=MLPClassifier(hidden_layer_sizes=(64,), max_iter=300), out_dir=out,
            num_models=32, num_targets=num_targets, replicas=replicas, progress=False,
        )
    figures = {}
    for condition in ("clean", "poisoned"):
        entry = results.conditions[condition].measurements
        figures[condition] = {
            "accuracy": dict(entry["accuracy"]),
            "attacks": {name: attack_row(results, condition, name) for name in ("lira-online", "rmia-online")},
        }
    figures["poison"] = dict(results.details["poison"])
    return figures


def best_tpr(results, condition: str) -> dict:
    """The attack with the highest TPR at 1% FPR in ``condition``, and that TPR."""
    name, result = max(((name, results.attack(condition, name)) for name in results.conditions[condition].attacks),
                       key=lambda item: item[1].tpr_at_fpr[0.01])
    return {"attack": name, "tpr_at_1pct_fpr": result.tpr_at_fpr[0.01], "auc": result.auc}


def default_against_guided(table: str, out: Path, *, rounds: int = 2) -> dict:
    """A config naming only ``table``; then, up to ``rounds`` times while the run's guidance
    finds the amplification small, the same config with that guidance applied."""
    config = parse_config({"data": {"source": table}}, source=table)
    results = run_task(config, out / f"{table}-default", progress=False)
    row = {"default": summary(results)}
    for round_number in range(1, rounds + 1):
        guidance = results.guidance
        if guidance is None or guidance.amplified:
            break
        config = apply_suggestions(config, guidance)
        results = run_task(config, out / f"{table}-guided-{round_number}", progress=False)
        row[f"guided-{round_number}"] = summary(results) | {
            "applied": [{"key": s.key, "from": s.current, "to": s.suggested} for s in guidance.suggestions],
            "findings": [finding.kind for finding in guidance.findings],
        }
    return row


def summary(results) -> dict:
    row = {condition: best_tpr(results, condition) for condition in ("clean", "poisoned")}
    row["test_accuracy"] = {c: results.conditions[c].measurements["accuracy"]["test"] for c in ("clean", "poisoned")}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/own-model-figures"))
    args = parser.parse_args()
    figures = {
        "breast_cancer_sklearn_mlp": sklearn_mlp_on_breast_cancer(args.out / "breast-cancer-sklearn-mlp"),
        # the poisons under 10% of a training set: one replica of each of 30 targets
        "breast_cancer_sklearn_mlp_one_replica": sklearn_mlp_on_breast_cancer(
            args.out / "breast-cancer-sklearn-mlp-one-replica", num_targets=30, replicas=1),
    }
    for table in ("breast-cancer", "wine"):
        figures[f"{table}_default_against_guided"] = default_against_guided(table, args.out)
    print(json.dumps(figures, indent=2))
    (args.out / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
