"""The tables of docs/adaptive.md from a replica sweep of an adaptive config:

    truthserum sweep configs/adaptive.yaml --replicas 0,1,2,4,8 --out runs/adaptive
    python experiments/adaptive_table.py runs/adaptive

One row per attack and measure, one column per condition (each fixed budget, then adaptive), with
the poisons each condition placed and its test accuracy."""

import json
import sys
from pathlib import Path

ATTACKS = ("label-only", "lira-online", "lira-offline", "rmia-online")


def _rate(metrics: dict, level: str) -> str:
    low, high = metrics["tpr_at_fpr_ci"][level]
    return f"{100 * metrics['tpr_at_fpr'][level]:.1f}% [{100 * low:.1f}, {100 * high:.1f}]"


def main(run_dir: Path) -> None:
    results = json.loads((run_dir / "sweep-replicas-results.json").read_text())
    conditions = results["conditions"]
    targets = results["poison"]["targets"]
    names = list(conditions)
    header = ["", *(f"{name} ({conditions[name]['replicas']:.2g} per target)" if name == "adaptive" else
                    f"{conditions[name]['replicas']} per target" for name in names)]
    rows = [["poisons", *(f"{round(conditions[n]['replicas'] * targets)}" for n in names)],
            ["test accuracy", *(f"{100 * conditions[n]['accuracy']['test']:.1f}%" for n in names)]]
    for attack in ATTACKS:
        for label, level in (("TPR at 1% FPR", "0.01"), ("TPR at 0.1% FPR", "0.001")):
            rows.append([f"{attack}, {label}", *(_rate(conditions[n]["attacks"][attack], level) for n in names)])
        rows.append([f"{attack}, AUC", *(f"{conditions[n]['attacks'][attack]['auc']:.3f}" for n in names)])
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    adaptive = results["poison"].get("adaptive")
    if adaptive:
        print(f"\nadaptive: {json.dumps(adaptive)}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
