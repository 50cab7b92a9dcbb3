"""The soundness check of every epsilon lower bound, by simulation (docs/auditing.md).

On the Gaussian mechanism of known epsilon (OUT scores N(0, 1), IN scores N(mu, 1), mu chosen so
the mechanism is exactly (epsilon, 1e-5)-DP), each repetition draws 1,000 member and 1,000
non-member pairs for the many-run bounds and 1,000 canaries with fair coins for the one-run
bounds, and computes every bound at 95%. Prints, per true epsilon, how often each bound exceeds
it (must be at most alpha = 5%) and its median as a fraction of the true epsilon.

Run: ``.venv/bin/python experiments/audit_soundness.py`` (about 2.5 minutes on 2 cores;
``--repetitions``, ``--epsilons``, ``--out``).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

from truthserum.metrics.soundness import simulate_bounds, soundness_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 4.0])
    parser.add_argument("--repetitions", type=int, default=1000)
    parser.add_argument("--pairs", type=int, default=1000, help="members, and as many non-members")
    parser.add_argument("--canaries", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/audit-soundness.json"))
    args = parser.parse_args()
    rows = []
    for epsilon in args.epsilons:
        start = time.perf_counter()
        rows += simulate_bounds(epsilon, repetitions=args.repetitions, pairs=args.pairs,
                                canaries=args.canaries, seed=args.seed)
        print(f"epsilon {epsilon:g}: {time.perf_counter() - start:.0f} s", flush=True)
    print(soundness_table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps([asdict(row) | {"violation_rate": row.violation_rate,
                                                    "median_fraction": row.median_fraction} for row in rows],
                                   indent=2) + "\n")


if __name__ == "__main__":
    main()
