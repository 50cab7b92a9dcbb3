"""The table of docs/auditing.md's DP-SGD audit, from finished audit runs.

Per run and condition: the accountant's epsilon, each bound's largest over the attacks (with the
attack that reached it), and the one-run bound with every model in turn as the one run (the
best attack for each): its median and largest, a spread over 8 x M tries, not a bound.

Run: ``.venv/bin/python experiments/audit_dpsgd_table.py runs/audit-eps4 runs/audit-eps8`` after
``truthserum run configs/audit.yaml --out runs/audit-eps4`` and the same with
``defense.epsilon: 8`` into runs/audit-eps8. Prints a Markdown table.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from truthserum.metrics.bounds import BOUND_FIELDS
from truthserum.metrics.one_run import one_run_bounds


def main(runs: list[str]) -> None:

    print("| accountant epsilon | condition | " + " | ".join(BOUND_FIELDS)
          + " | one-run, each model as the run: median / largest |")
    print("|---|---|" + "---|" * len(BOUND_FIELDS) + "---|")
    for run in runs:
        with open(f"{run}/results.json") as handle:
            results = json.load(handle)
        for condition, entry in results["conditions"].items():
            attacks = entry["attacks"]
            cells = []
            for key in BOUND_FIELDS.values():
                best = max(attacks, key=lambda name: attacks[name]["epsilon_bounds"][key] or 0.0)
                value = attacks[best]["epsilon_bounds"][key]
                cells.append(f"{value:.2f} ({best})" if value else "0.00")
            delta = next(iter(attacks.values()))["epsilon_bounds"]["delta"]
            with np.load(f"{run}/scores-{condition}.npz", allow_pickle=False) as scores:
                members = scores["members"]
                per_model = [max(one_run_bounds(scores[name][row], members[row], delta=delta).epsilon
                                 for name in attacks) for row in range(members.shape[0])]
            print(f"| {entry['privacy']['epsilon']:.2f} | {condition} | " + " | ".join(cells)
                  + f" | {np.median(per_model):.2f} / {max(per_model):.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
